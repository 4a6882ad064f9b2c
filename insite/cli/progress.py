"""A run as the coordinator follows it: round rows as they arrive, the final table, the Dice plot."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table


def trained(row: dict) -> set[str]:
    """The sites whose update is in the round's model."""
    return {name for name, metrics in row["sites"].items() if "num_train" in metrics}


def participation(row: dict, previous: dict | None) -> str:
    """Who took part, who dropped out at which stage, who came back: "2 of 3 sites (site-b dropped at ...)"."""
    dropped = row.get("dropped", {})
    took_part = trained(row)
    # A site lost at unmask had already sent its masked update, which the protocol still counts.
    notes = [
        f"{site} dropped at {stage}" + (", its update counted" if site in took_part else "")
        for site, stage in sorted(dropped.items())
    ]
    if previous is not None:
        back = sorted(took_part - trained(previous) - set(dropped))
        notes += [f"{site} rejoined" for site in back if site in previous.get("dropped", {})]
    if row.get("attempts", 1) > 1:
        notes.append(f"attempt {row['attempts']}")
    if not notes:
        return ""
    return f"  [yellow]{len(took_part)} of {len(took_part | set(dropped))} sites ({'; '.join(notes)})[/]"


def site_dice(metrics: dict) -> str:
    """A site's Dice, or "-" when the site was not there to score the round's model."""
    return f"{metrics['dice']:.3f}" if "dice" in metrics else "-"


def round_line(row: dict, total_rounds: int, previous: dict | None = None) -> str:
    sites = "  ".join(f"{name} {site_dice(m)}" for name, m in sorted(row["sites"].items()))
    return (
        f"round {row['round']:>3}/{total_rounds}  global Dice [bold]{row['global_dice']:.3f}[/]"
        f"  {sites}  ({row['wall_s']:.1f} s){participation(row, previous)}"
    )


def rounds_table(rows: list[dict]) -> Table:
    sites = sorted({name for row in rows for name in row["sites"]})
    table = Table(title="Dice per round (held-out validation cases, per site and case-weighted global)")
    table.add_column("round", justify="right")
    table.add_column("global", justify="right", style="bold")
    for name in sites:
        table.add_column(name, justify="right")
    table.add_column("wall s", justify="right")
    for row in rows:
        table.add_row(
            str(row["round"]),
            f"{row['global_dice']:.3f}",
            *[site_dice(row["sites"].get(n, {})) for n in sites],
            f"{row['wall_s']:.1f}",
        )
    return table


def plot_dice(rows: list[dict], path: Path) -> Path:
    import matplotlib  # noqa: PLC0415  (the backend must be chosen before pyplot is imported)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rounds = [row["round"] for row in rows]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for name in sorted({n for row in rows for n in row["sites"]}):
        axes.plot(
            rounds, [row["sites"].get(name, {}).get("dice", float("nan")) for row in rows], marker="o", label=name
        )
    axes.plot(
        rounds,
        [row["global_dice"] for row in rows],
        color="black",
        linewidth=2.5,
        marker="s",
        label="global (case-weighted)",
    )
    axes.set_xlabel("round")
    axes.set_ylabel("Dice (held-out cases)")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title("Federated training: Dice of the global model per site")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
