"""``insite site ...``: what a site administrator runs on the site's own machine."""

from insite.cli import site_approve, site_data, site_deface, site_key, site_ledger, site_node, site_stats
from insite.cli.terminal import command_group

app = command_group()
site_data.register(app)
site_key.register(app)
site_approve.register(app)
site_node.register(app)
site_ledger.register(app)
site_deface.register(app)
site_stats.register(app)
