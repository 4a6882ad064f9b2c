"""``insite coord ...``: what the consortium coordinator runs."""

import typer

app = typer.Typer(no_args_is_help=True)
