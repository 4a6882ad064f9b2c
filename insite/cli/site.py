"""``insite site ...``: what a site administrator runs on the site's own machine."""

import typer

app = typer.Typer(no_args_is_help=True)
from insite.cli import site_data; site_data.register(app)  # noqa: E402,E702  (issue 3: data commands)
from insite.cli import site_approve; site_approve.register(app)  # noqa: E402,E702  (issue 4: app approval)
from insite.cli import site_node; site_node.register(app)  # noqa: E402,E702  (issue 4: keys, join)
from insite.cli import site_ledger; site_ledger.register(app)  # noqa: E402,E702  (issue 4: egress ledger)
