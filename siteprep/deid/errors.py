"""The de-identification failure family.

A :class:`DeidError` means the run as a whole cannot go on safely (a bad setting, a key file that
is unreadable or would be written into the output tree). A single file that cannot be
de-identified safely is *not* an error: it is quarantined with a reason and the run continues.
"""

from common.errors import InsiteError


class DeidError(InsiteError):
    """De-identification cannot proceed safely; the message names the file or setting at fault."""
