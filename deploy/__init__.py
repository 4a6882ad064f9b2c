"""Provisioning (CA, certificates, site keys) and the local launcher for a federation on one host."""
