"""The ``insite`` command line: one entry point, sub-commands per role."""
