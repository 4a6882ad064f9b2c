"""Code used by both the coordinator and the sites: configs, model factory, weights, errors."""
