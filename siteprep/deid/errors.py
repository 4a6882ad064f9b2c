"""The de-identification failure family.

A :class:`DeidError` means the run as a whole cannot go on safely (a bad setting, a key file that
is unreadable or would be written into the output tree). A single file that cannot be
de-identified safely is *not* an error: it is quarantined with a reason and the run continues.

:class:`KeyFileError` and its kinds say why the site's pseudonymisation key cannot be opened; each
leaves the key file as it was.
"""

from common.errors import InsiteError


class DeidError(InsiteError):
    """De-identification cannot proceed safely; the message names the file or setting at fault."""


class KeyFileError(DeidError):
    """The site's key file, or its passphrase, cannot be used; the file is left as it was."""


class WrongPassphrase(KeyFileError):
    """The passphrase does not unlock the key file (its scrypt check value differs)."""


class CorruptKeyFile(KeyFileError):
    """The key file is damaged or truncated: its header does not parse, or authentication failed."""


class ForeignKeyFile(KeyFileError):
    """The key file's authenticated header names another site than the one the settings name."""


class PlaintextKeyFile(KeyFileError):
    """The key file is an unencrypted one of an older insite: ``insite site key encrypt`` migrates it."""
