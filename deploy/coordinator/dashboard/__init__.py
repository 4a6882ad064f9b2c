"""The coordinator's live web dashboard: sites, the current run, Dice, run history, publication.

Read-only by construction: every route answers GET only, and nothing here writes to the
consortium folder except the dashboard's own login token. ``api`` builds the JSON from the
consortium's files and its SuperLink's database, ``app`` serves it with the page, ``server`` runs
it in the background of ``insite coord launch`` and ``insite demo``.
"""
