"""Datasets stored without a preamble or file meta, as older archives wrote them.

PS3.10 files begin with a 128-byte preamble, 'DICM' and a file meta group that names the
transfer syntax. Archives from before that (ACR-NEMA era exports, some PACS dumps) hold only the
data set, usually Implicit VR Little Endian, so the encoding has to be inferred. pydicom's own
inference (``force=True``) takes the first guess that does not fail outright, which is how
``no_meta.dcm`` in pydicom's test files reads as one nonsense element. A de-identifier cannot act
on a guess: an element read with the wrong encoding is not the element the next reader sees.

So such a file is accepted only when exactly one of the three uncompressed encodings parses it
completely and cleanly: no warning, every element whole, public tags all known to the DICOM
dictionary, tags in ascending order, the data set starting in group 0008 (where every composite
object's header begins), and a SOP class and instance UID to file it under. Anything else stays
quarantined as not DICOM, with each encoding's reason. An accepted file gets a file meta naming
the encoding found; the engine then rebuilds the rest of it as for any other file (PS3.10 7.1).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

from pydicom.datadict import dictionary_has_tag, repeater_has_tag
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from siteprep.deid.reasons import Reason, Unsafe

ENCODINGS: tuple[tuple[UID, bool, bool], ...] = (  # (transfer syntax, implicit VR, little endian)
    (ImplicitVRLittleEndian, True, True),
    (ExplicitVRLittleEndian, False, True),
    (ExplicitVRBigEndian, False, False),
)
FIRST_GROUP = 0x0008
_FIRST_GROUP_BYTES = (FIRST_GROUP.to_bytes(2, "little"), FIRST_GROUP.to_bytes(2, "big"))


def _known(tag: BaseTag) -> bool:
    return tag.is_private or dictionary_has_tag(tag) or repeater_has_tag(tag) or tag.element == 0  # group length


def _parse_completely(stream: BinaryIO, implicit: bool, little: bool) -> Dataset:
    """The whole data set read with one encoding, or ValueError saying where it went wrong."""
    stream.seek(0)
    order: list[BaseTag] = []

    def record(tag: BaseTag, vr: str | None, length: int) -> bool:
        order.append(tag)
        return False

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns when it has to guess: a guess is a failure here
        try:
            dataset = read_dataset(stream, implicit, little, stop_when=record)
            for _ in dataset.iterall():  # converts every raw value, nested ones included
                pass
        except Exception as error:
            raise ValueError(f"{type(error).__name__}: {str(error).splitlines()[0][:80]}") from None
    if not order or order[0].group != FIRST_GROUP:
        raise ValueError(f"starts with {order[0] if order else 'nothing'}, not group {FIRST_GROUP:04X}")
    if order != sorted(order):
        raise ValueError("elements out of tag order")
    if unknown := [tag for tag in order if not _known(tag)]:
        raise ValueError(f"{len(unknown)} unknown public element(s), first {unknown[0]}")
    if not dataset.get("SOPClassUID") or not dataset.get("SOPInstanceUID"):
        raise ValueError("no SOPClassUID/SOPInstanceUID")
    if stream.read(1):
        raise ValueError("bytes left over after the last element")
    return dataset


def read_headerless(path: Path) -> Dataset:
    """``path``'s data set with a file meta naming its one unambiguous encoding, else :class:`Unsafe`.

    The caller still checks the result like any parsed file (truncation, pixels, SOP instance).
    """
    with path.open("rb") as stream:
        if stream.read(2) not in _FIRST_GROUP_BYTES:  # cheap refusal of most non-DICOM files
            raise Unsafe(Reason.NOT_DICOM, "no preamble/file meta, and no data set starting in group 0008")
        parses: dict[UID, Dataset] = {}
        failures: list[str] = []
        for syntax, implicit, little in ENCODINGS:
            try:
                parses[syntax] = _parse_completely(stream, implicit, little)
            except ValueError as error:
                failures.append(f"{syntax.name}: {error}")
    if len(parses) != 1:
        detail = "; ".join(failures) if not parses else f"parses as {' and as '.join(u.name for u in parses)}"
        raise Unsafe(Reason.NOT_DICOM, f"no preamble/file meta and no single unambiguous encoding ({detail})"[:300])
    syntax, dataset = parses.popitem()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax
    return dataset


def was_bare(dataset: Dataset) -> bool:
    """Whether ``dataset`` came from :func:`read_headerless` (dcmread gives a FileDataset)."""
    return not isinstance(dataset, FileDataset)
