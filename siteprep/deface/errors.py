"""The defacing failure family.

A :class:`DefaceError` means the run as a whole cannot go on (a missing source folder, an output
folder inside the source). A single series that cannot be defaced with confidence is *not* an
error: it is quarantined with a reason (:class:`~siteprep.deface.outcome.SeriesOutcome`).
"""

from common.errors import InsiteError


class DefaceError(InsiteError):
    """Defacing cannot proceed; the message names the folder or setting at fault."""
