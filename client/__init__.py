"""Site side: the Flower ClientApp, local training and the site's own data."""
