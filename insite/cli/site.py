"""``insite site ...``: what a site administrator runs on the site's own machine."""

import typer

app = typer.Typer(no_args_is_help=True)
