"""Shared-assets manifest: schema, seed 000's decision trees, approvals and the publication policy.

Used by the researcher's CLI (draft, explain, approve, collect) and by the coordinator's export and
anyone's verify. Nothing here touches the network or a run directory: callers pass what they read.
"""
