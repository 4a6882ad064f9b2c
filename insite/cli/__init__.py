"""``insite``: one command, a sub-command per role.

The CLI only parses arguments and presents results; the work happens in ``client``, ``server``,
``common`` and ``deploy``. Expected failures (:class:`common.errors.InsiteError`) become one red
line and exit code 2, never a traceback.
"""

import logging
import sys

import typer
from rich.console import Console

from common.errors import InsiteError
from insite.cli import coord, demo, manifest, publish, site

app = typer.Typer(
    name="insite",
    help="Federated learning for multi-site medical imaging. Imaging data never leaves a site.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(site.app, name="site", help="Site administrator: prepare data, join the federation.")
app.add_typer(coord.app, name="coord",
              help="Consortium coordinator: provision, register sites, write kits, launch, run, resume.")
app.command(name="demo")(demo.demo)
app.add_typer(manifest.app, name="manifest",
              help="Researcher: draft, explain, approve and collect the shared-assets manifest.")
app.command(name="export")(publish.export)
app.command(name="verify")(publish.verify)

_err = Console(stderr=True)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except InsiteError as error:
        _err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _err.print("[yellow]interrupted[/]")
        sys.exit(130)
