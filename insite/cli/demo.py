"""``insite demo``: a whole federation on this machine with synthetic hospital sites."""


def demo() -> None:
    """Run a three-site federation on this machine with synthetic data."""
