"""Strict reading: a file is de-identified only if it parses cleanly and completely (fail closed).

pydicom is lenient by design: it guesses a missing transfer syntax, switches VR mode when the data
contradicts the file meta, and returns a short value when a file ends early. Each of those guesses
could hide an element from the de-identifier (a value read with the wrong VR is not the value the
next reader sees), so here every guess is a reason to quarantine: any warning pydicom raises while
parsing, a file meta without a transfer syntax, and any element whose value is shorter than its
declared length (PS3.5 7.1).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from siteprep.deid.elements import raw_vr
from siteprep.deid.headerless import read_headerless
from siteprep.deid.reasons import Reason, Unsafe

UNDEFINED_LENGTH = 0xFFFFFFFF


@contextmanager
def parse_warnings_are_unsafe() -> Iterator[None]:
    """Turn any warning raised inside the block into :class:`Unsafe` (PARSE_WARNING).

    Value-validation warnings (an over-long SH, a lowercase CS) are switched off: they describe
    values the profile handles like any other, not a parse that went astray. ResourceWarnings are
    not recorded either: the garbage collector raises them about whatever unrelated object it
    happens to collect inside the block (an earlier FileSet's temporary folder quarantined a
    DICOMDIR), never about the file being parsed.
    """
    previous = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", ResourceWarning)
            yield
        if caught:
            raise Unsafe(Reason.PARSE_WARNING, str(caught[0].message).splitlines()[0][:200])
    finally:
        pydicom_config.settings.reading_validation_mode = previous


def _check_complete(dataset: Dataset) -> None:
    """Refuse a file that ends inside an element.

    pydicom reads sequentially, so a file that ends early ends inside its last element: the last
    element of the data set, or of the last item of that element if it is a sequence, and so on
    down. A sequence of defined length is read as one value first, so its own length is checked
    before its items. (A missing item or sequence delimiter makes pydicom warn instead.)
    """
    tags = list(dataset.keys())
    if not tags:
        return
    tag = tags[-1]
    raw = dataset.get_item(tag)
    if (
        isinstance(raw, RawDataElement)
        and raw.length != UNDEFINED_LENGTH
        and raw.value is not None
        and len(raw.value) < raw.length
    ):
        raise Unsafe(
            Reason.TRUNCATED, f"element ({tag.group:04X},{tag.element:04X}) has {len(raw.value)} of {raw.length} bytes"
        )
    if raw_vr(dataset, tag) == "SQ" and dataset[tag].value:
        _check_complete(dataset[tag].value[-1])


def read_strictly(path: Path) -> Dataset:
    """Parse ``path`` completely or raise :class:`Unsafe` naming why it cannot be trusted.

    A file without preamble and file meta is read only if its encoding is unambiguous
    (:mod:`siteprep.deid.headerless`).
    """
    dataset: Dataset
    try:
        dataset = dcmread(path)
    except InvalidDicomError:  # no preamble and 'DICM': perhaps a bare data set from an older archive
        dataset = read_headerless(path)
    except Exception as error:  # pydicom raises many types on malformed input; all mean "unsafe"
        raise Unsafe(Reason.UNREADABLE, f"{type(error).__name__}: {error}"[:200]) from None
    if not dataset.file_meta.get("TransferSyntaxUID"):
        raise Unsafe(Reason.MISSING_TRANSFER_SYNTAX, "file meta has no TransferSyntaxUID (0002,0010)")
    try:
        _check_complete(dataset.file_meta)
        _check_complete(dataset)
    except Unsafe:
        raise
    except Exception as error:
        raise Unsafe(Reason.UNREADABLE, f"{type(error).__name__}: {error}"[:200]) from None
    return dataset
