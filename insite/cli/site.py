"""``insite site ...``: what a site administrator runs on the site's own machine."""

import typer

from insite.cli import site_approve, site_data, site_ledger, site_node

app = typer.Typer(no_args_is_help=True)
site_data.register(app)
site_approve.register(app)
site_node.register(app)
site_ledger.register(app)
