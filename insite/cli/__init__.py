"""``insite``: one command, a sub-command per role.

The CLI only parses arguments and presents results; the work happens in the rooms below it
(docs/ARCHITECTURE.md). Expected failures (:class:`common.errors.InsiteError`) become one red
line and exit code 2, never a traceback.
"""

import logging
import sys

from rich.markup import escape

from common.errors import InsiteError
from insite.cli import coord, demo, manifest, publish, simulate, site
from insite.cli.terminal import (
    EXIT_CHECK_FAILED,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PAUSED,
    command_group,
    err_console,
)

EXIT_CODES = f"""Exit codes, the same for every command:

{EXIT_OK}: done.

{EXIT_CHECK_FAILED}: a check ran and found a problem (verify, site ledger verify, site scan, site check).

{EXIT_ERROR}: the command could not do its work (bad input, a missing or invalid file, a refused operation,
wrong arguments); one line on stderr names the file or site and the reason.

{EXIT_PAUSED}: a federated run paused: too few sites for too long; it is continued later where it stopped.

{EXIT_INTERRUPTED}: interrupted (Ctrl-C)."""

app = command_group(
    name="insite",
    help="Federated learning for multi-site medical imaging. Imaging data never leaves a site.",
    epilog=EXIT_CODES,
)
app.add_typer(site.app, name="site", help="Site administrator: prepare data, join the federation.")
app.add_typer(
    coord.app, name="coord", help="Consortium coordinator: provision, register sites, write kits, launch, run, resume."
)
app.command(name="demo")(demo.demo)
app.command(name="simulate")(simulate.simulate)
app.add_typer(
    manifest.app, name="manifest", help="Researcher: draft, explain, approve and collect the shared-assets manifest."
)
app.command(name="export")(publish.export)
app.command(name="verify")(publish.verify)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except InsiteError as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(EXIT_INTERRUPTED)
