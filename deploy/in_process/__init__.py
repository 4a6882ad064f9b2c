"""The project's apps in one process, over a stub of Flower's Grid (tests, benchmarks)."""
