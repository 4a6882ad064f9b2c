"""A federated evaluation at the terminal and as a picture: models side by side, per site.

Shared by ``insite coord evaluate`` and ``insite demo``. The table has a row per site and, per
model, its Dice, HD95 and case count; the PNG has grouped bars (one group per site, one bar per
model) so the value of federating shows at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from insite.cli.terminal import console


def sites_of(result: dict[str, Any]) -> list[str]:
    return sorted({site for model in result["models"] for site in (*model["sites"], *model["failures"])})


def evaluation_table(result: dict[str, Any]) -> Table:
    table = Table(title="Federated evaluation: held-out cases of each site (HD95 in voxels)")
    table.add_column("site")
    for model in result["models"]:
        table.add_column(f"{escape(model['name'])}\nDice / HD95 / cases", justify="right")
    for site in sites_of(result):
        cells = []
        for model in result["models"]:
            scores = model["sites"].get(site)
            if scores is not None:
                cells.append(f"{scores['dice']:.3f} / {scores['hd95']:.1f} / {int(scores['num_val'])}")
            else:
                cells.append(f"[red]{escape(model['failures'].get(site, 'not asked'))}[/]")
        table.add_row(site, *cells)
    return table


def print_evaluation(result: dict[str, Any]) -> None:
    console.print(evaluation_table(result))


def plot_evaluation(result: dict[str, Any], path: Path) -> Path:
    """Grouped bars of Dice: one group per site, one bar per model (a failed site has no bar)."""
    import matplotlib  # noqa: PLC0415  (the backend must be chosen before pyplot is imported)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    sites = sites_of(result)
    models = result["models"]
    width = 0.8 / max(1, len(models))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(sites) * max(1, len(models)) / 2), 4.2))
    for number, model in enumerate(models):
        positions = [index + (number - (len(models) - 1) / 2) * width for index in range(len(sites))]
        heights = [model["sites"].get(site, {}).get("dice", 0.0) for site in sites]
        axes.bar(positions, heights, width, label=model["name"])
    axes.set_xticks(range(len(sites)), sites)
    axes.set_ylabel("Dice (held-out cases)")
    axes.set_ylim(0, 1)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    axes.set_title("Federated evaluation: Dice per site and model")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
