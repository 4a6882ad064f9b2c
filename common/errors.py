"""One exception family per kind of failure.

Every message names the file, site or setting at fault and the reason, because the person reading
it is a site administrator or coordinator at a terminal, not the developer. The CLI prints
``str(error)`` on one line and exits non-zero; it never shows a traceback for these.
"""


class InsiteError(Exception):
    """Base of every expected failure; anything else is a bug."""


class ConfigError(InsiteError):
    """A configuration file is missing, malformed or holds an unknown or invalid setting."""


class SiteDataError(InsiteError):
    """A site's data directory is missing, empty or holds an unreadable or inconsistent case."""


class ProvisioningError(InsiteError):
    """A certificate, key or consortium file is missing, invalid or of the wrong kind."""


class LaunchError(InsiteError):
    """A SuperLink/SuperNode process could not be started or died, or a port is taken."""


class FederationError(InsiteError):
    """A federated run failed: a site reported an error, too few sites replied, or a round timed out."""


class CheckpointError(InsiteError):
    """A checkpoint or run directory is missing, corrupt or belongs to a different configuration."""


class ManifestError(InsiteError):
    """A shared-assets manifest or approval is missing, malformed, or does not match its assets."""


class ExportError(InsiteError):
    """An export was refused by the publication policy or could not be written."""
