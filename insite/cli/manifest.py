"""``insite manifest ...``: draft the shared-assets manifest, explain it, approve it, collect approvals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from common.keys import fingerprint, load_private_key, load_public_key
from common.run_record import RunRecord
from insite.cli.terminal import command_group
from insite.cli.terminal import console as _out
from publication.draft import DEFAULT_TEMPLATE, draft_manifest
from publication.manifest.approvals import approve_manifest as sign_manifest
from publication.manifest.approvals import collect as collect_approvals
from publication.manifest.approvals import (
    default_collected_path,
    load_approval,
    manifest_digest,
    write_model,
)
from publication.manifest.policy import decisions
from publication.manifest.schema import (
    ACCESS_TITLES,
    KIND_TITLES,
    RoundSelection,
    load_manifest,
)
from publication.manifest.trees import PublicationOutcome
from publication.signing import create_key, load_public_keys

app = command_group()

_STYLE = {
    PublicationOutcome.PUBLISH: "green",
    PublicationOutcome.RESTRICTED: "yellow",
    PublicationOutcome.EXEMPTION: "red",
    PublicationOutcome.DO_NOT_PUBLISH: "bold red",
}

ManifestArg = Annotated[Path, typer.Argument(help="the manifest TOML file")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


@app.command()
def keygen(key: Annotated[Path, typer.Argument(help="where to create the private key (0600)")]) -> None:
    """Create a site's approval key on this machine; send only the .pub file to the coordinator."""
    public = create_key(key)
    _out.print(
        f"private key {key} (stays here)\npublic key  {public} "
        f"{fingerprint(load_public_key(public))}: give this file to the coordinator"
    )


@app.command()
def draft(
    run: Annotated[Path, typer.Argument(help="the coordinator's run directory")],
    out: Annotated[Path, typer.Option("--out", help="manifest file to write")],
    template: Annotated[Path, typer.Option(help="answers and licences")] = DEFAULT_TEMPLATE,
    environment: Annotated[list[Path], typer.Option(help="environment file(s), e.g. a lock file")] = [],  # noqa: B006
    code: Annotated[list[Path], typer.Option(help="code file(s) to share")] = [],  # noqa: B006
    round_choice: Annotated[
        RoundSelection,
        typer.Option(
            "--round",
            help="which round to publish: 'final' (the run's last scored round) or 'best' "
            "(its scored round with the highest global Dice)",
        ),
    ] = "final",
) -> None:
    """Draft a manifest for RUN: pins the run record, the chosen checkpoint and any files named."""
    extra = {kind: paths for kind, paths in (("environment", environment), ("code", code)) if paths}
    loaded = draft_manifest(run, template, out, extra, round_choice)
    run_ref = loaded.manifest.run
    _out.print(
        f"drafted {out} for round {run_ref.round} ({run_ref.selection}; digest "
        f"{manifest_digest(loaded.raw)[:16]}...); review it, then run "
        f"'insite manifest explain {out}'"
    )


@app.command()
def explain(manifest: ManifestArg, as_json: JsonOpt = False) -> None:
    """Show, per asset, the decision-tree outcome and the answers that led there."""
    loaded = load_manifest(manifest)
    found = decisions(loaded.manifest)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "asset": d.kind,
                        "tree": d.tree,
                        "outcome": d.outcome.title,
                        "path": [
                            {
                                "question": s.question,
                                "answer": s.answer,
                                "consequence": s.consequence,
                                "outcome": s.outcome.title if s.outcome is not None else None,
                            }
                            for s in d.path
                        ],
                    }
                    for d in found
                ],
                indent=1,
            )
        )
        return
    for decision in found:
        style = _STYLE[decision.outcome]
        tree = Tree(
            f"[bold]{KIND_TITLES[decision.kind]}[/] ({decision.tree} tree): [{style}]{decision.outcome.title}[/]"
        )
        for step in decision.path:
            tree.add(f"{escape(step.question)} [cyan]{escape(step.answer)}[/] -> {escape(step.consequence)}")
        _out.print(tree)


@app.command()
def approve(
    manifest: ManifestArg,
    site: Annotated[str, typer.Option(help="this site's name in the consortium")],
    key: Annotated[Path, typer.Option(help="this site's private approval key")],
    out: Annotated[Path | None, typer.Option(help="approval file; default <manifest>.<site>.approval.json")] = None,
) -> None:
    """Sign the manifest's digest with this site's key (send the approval file to the coordinator)."""
    loaded = load_manifest(manifest)
    for asset, decision in zip(loaded.manifest.assets, decisions(loaded.manifest), strict=True):
        _out.print(
            f"  {KIND_TITLES[asset.kind]}: {asset.licence}, {ACCESS_TITLES[asset.access]}, "
            f"[{_STYLE[decision.outcome]}]{decision.outcome.title}[/]",
            highlight=False,
        )
    approval = sign_manifest(site, loaded.raw, load_private_key(key))
    target = out or manifest.with_name(f"{manifest.stem}.{site}.approval.json")
    write_model(target, approval)
    _out.print(f"{site} approved {manifest} (digest {approval.manifest_sha256[:16]}...): {target}")


@app.command()
def collect(
    manifest: ManifestArg,
    approvals: Annotated[list[Path], typer.Argument(help="approval files from the sites")],
    run: Annotated[Path, typer.Option(help="run directory: its record names the contributing sites")],
    keys: Annotated[Path, typer.Option(help="folder of the consortium's <site>.pub keys")],
    out: Annotated[Path | None, typer.Option(help="default <manifest>.approvals.json")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the sites' approvals and keep the valid ones; report contributing sites still missing."""
    loaded = load_manifest(manifest)
    contributors = sorted(RunRecord(run).read().get("sites", []))
    approval_set, check = collect_approvals(
        [load_approval(path) for path in approvals], manifest_digest(loaded.raw), load_public_keys(keys)
    )
    target = out or default_collected_path(manifest)
    write_model(target, approval_set)
    missing = [site for site in contributors if site not in check.valid]
    if as_json:
        print(
            json.dumps(
                {"collected": str(target), "valid": list(check.valid), "rejected": check.rejected, "missing": missing},
                indent=1,
            )
        )
        return
    table = Table("site", "contributed", "approval")
    for site in sorted(set(contributors) | set(check.valid) | set(check.rejected)):
        verdict = "[green]valid[/]" if site in check.valid else f"[red]{check.rejected.get(site, 'missing')}[/]"
        table.add_row(site, "yes" if site in contributors else "no", verdict)
    _out.print(table)
    _out.print(
        f"wrote {target}; "
        + (f"[red]still missing: {', '.join(missing)}[/]" if missing else "[green]every contributing site approved[/]")
    )
