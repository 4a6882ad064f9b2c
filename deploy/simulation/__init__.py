"""Many virtual sites on one machine, in Flower's simulation engine (Ray)."""
