"""Apply the resolved profile to every element of one dataset (PS3.15 E.1, E.3).

Every element is visited: top level, every item of every sequence at any depth, private blocks
and the file meta (rebuilt, PS3.10 7.1). Per element the action is the table's (after options),
or for attributes the table does not list a fail-closed rule by VR: names are emptied, dates
follow the temporal option, UIDs are replaced, undecodable public UN elements are removed. Every
text value that is kept is scrubbed of the object's own identifying values.

Sequences: Z empties the sequence; D and C keep the items and walk into them, and unlisted free
text inside (an SR TextValue) is then dummied (D) or cleaned (C) with its sequence, code-macro
vocabulary excepted; K and U* walk in under the surrounding rule. Repeating groups: curves
(50xx) and overlays (60xx) are removed whole, even under Clean Graphics, because bitmaps and
curves cannot be cleaned automatically (PS3.15 E.3.3 allows removal as cleaning).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache

from pydicom import config as pydicom_config
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_has_tag, dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence_item
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from siteprep.deid.elements import (
    SIMPLE_CODECS,
    codec_for,
    first_string,
    keyword,
    keyword_tag,
    peek,
    raw_bytes,
    raw_vr,
    set_value,
    string_values,
)
from siteprep.deid.identifiers import collect_identifiers, is_registered_uid
from siteprep.deid.keys import PatientIdentity, Pseudonym, SiteKey
from siteprep.deid.profile import Action, Profile
from siteprep.deid.values import TEXT_VRS, clean_text, dummy, parse_date, shift_multi

CURVE_GROUPS = range(0x5000, 0x5020, 2)  # (50xx,xxxx) repeating group, PS3.15 Table E.1-1
OVERLAY_GROUPS = range(0x6000, 0x6020, 2)  # (60xx,3000) Overlay Data, (60xx,4000) Comments
REMOVED_GROUPS = frozenset(CURVE_GROUPS) | frozenset(OVERLAY_GROUPS)
METHOD_CODE_SEQUENCE = BaseTag(0x00120064)  # DeidentificationMethodCodeSequence
SOP_CLASS_UID, SOP_INSTANCE_UID = BaseTag(0x00080016), BaseTag(0x00080018)


@dataclass(frozen=True)
class SafePrivateKey:
    group: int
    creator: str
    element: int


@dataclass
class DeidOutcome:
    """What de-identifying one dataset did: actions per attribute and the subject it belongs to."""

    subject: str
    identifiers: set[str]  # the identifying values the object held before (for the run's scan)
    actions: Counter = field(default_factory=Counter)  # (keyword, action code) -> count


FREE_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN"})
# Code Sequence Macro attributes (PS3.3 Table 8.8-1): controlled vocabulary, not patient text.
CODE_MACRO = frozenset(
    tag_for_keyword(k)
    for k in (
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "LongCodeValue",
        "URNCodeValue",
        "ContextIdentifier",
        "ContextUID",
        "MappingResource",
        "MappingResourceName",
        "ContextGroupVersion",
        "ContextGroupLocalVersion",
        "ContextGroupExtensionCreatorUID",
    )
)


@dataclass(frozen=True)
class _Context:
    """What holds for a dataset being walked.

    ``free_text`` is set inside a sequence the profile dummies (D) or cleans (C), e.g. Content
    Sequence or Graphic Annotation Sequence: free text there that the table does not list on its
    own (an SR TextValue, a graphic's UnformattedTextValue) is dummied or cleaned with it,
    instead of being kept.
    """

    codec: str | None = SIMPLE_CODECS[""]  # None: the character set needs pydicom to decode
    free_text: Action | None = None


class _Walker:
    def __init__(
        self,
        profile: Profile,
        key: SiteKey,
        pseudonym: Pseudonym,
        safe_private: frozenset[SafePrivateKey],
        identifiers: set[str],
    ) -> None:
        self.profile = profile
        self.key = key
        self.pseudonym = pseudonym
        self.safe_private = safe_private
        self.identifiers = identifiers
        self.raw_needles = (
            [i.lower().encode("ascii") for i in identifiers] if all(i.isascii() for i in identifiers) else None
        )
        self.counts: Counter = Counter()
        options = profile.options
        self.date_action = (
            Action.KEEP
            if options.retain_longitudinal_full_dates
            else Action.CLEAN
            if options.retain_longitudinal_modified_dates
            else Action.EMPTY
        )

    def walk(self, dataset: Dataset, context: _Context) -> None:
        codec = codec_for(dataset, context.codec)
        if codec != context.codec:
            context = replace(context, codec=codec)
        for tag in list(dataset._dict):
            group = tag >> 16  # BaseTag is an int: shifts and masks skip its Python-level properties
            if group & 1:
                self._private(dataset, tag, context)
            elif not tag & 0xFFFF or group in REMOVED_GROUPS:
                # Group lengths are recomputed on write; curves and whole overlay groups go, because
                # bitmaps and curves cannot be cleaned automatically and a partial overlay is invalid.
                self._count(tag, Action.REMOVE)
                del dataset[tag]
            else:
                vr = raw_vr(dataset, tag)
                action = self.profile.action_for(int(tag)) or self._unlisted(tag, vr)
                if action is Action.KEEP and context.free_text and vr in FREE_TEXT_VRS and int(tag) not in CODE_MACRO:
                    action = context.free_text
                self._apply(dataset, tag, vr, action, context)
        self._drop_unused_private_creators(dataset)

    def _unlisted(self, tag: BaseTag, vr: str) -> Action:
        """Fail-closed rule for attributes Table E.1-1 does not list."""
        if vr == "SQ":
            return Action.KEEP
        if vr == "PN":
            return Action.EMPTY
        if vr in ("DA", "DT"):
            return self.date_action
        if vr == "UI":
            return Action.UID
        if vr == "UN" and not dictionary_has_tag(tag):
            return Action.REMOVE
        return Action.KEEP

    def _apply(self, dataset: Dataset, tag: BaseTag, vr: str, action: Action, context: _Context) -> None:
        self._count(tag, action)
        if action is Action.REMOVE:
            del dataset[tag]
        elif vr == "SQ":
            if action is Action.EMPTY:
                dataset[tag].value = Sequence()
                return
            if action in (Action.DUMMY, Action.CLEAN):  # K and U* keep the surrounding rule
                context = replace(context, free_text=action)
            for item in dataset[tag].value or ():
                self.walk(item, context)
        elif action is Action.EMPTY:
            set_value(dataset, tag, vr, None, context.codec)
        elif action is Action.UID or (action is Action.DUMMY and vr == "UI"):
            uids = [
                v if is_registered_uid(v) else self.key.uid(v)
                for v in string_values(dataset, tag, vr, context.codec)
                if v
            ]
            set_value(dataset, tag, "UI", uids, context.codec)
        elif action is Action.DUMMY:
            set_value(dataset, tag, vr, dummy(vr), context.codec)
        elif action is Action.CLEAN:
            self._clean(dataset, tag, vr, context)
        elif vr in TEXT_VRS and not self._surely_clean(dataset, tag, context):
            self._scrub(dataset, tag, vr, context, patterns=False)

    def _surely_clean(self, dataset: Dataset, tag: BaseTag, context: _Context) -> bool:
        """True when a kept raw text value holds none of the object's identifiers (no decoding).

        Only for character sets in which an ASCII identifier is spelled in ASCII bytes.
        """
        raw = raw_bytes(dataset, tag)
        if raw is None or context.codec is None or self.raw_needles is None:
            return False
        lowered = raw.lower()
        return not any(needle in lowered for needle in self.raw_needles)

    def _clean(self, dataset: Dataset, tag: BaseTag, vr: str, context: _Context) -> None:
        if vr in ("DA", "DT") and self.date_action is Action.CLEAN:
            values = string_values(dataset, tag, vr, context.codec)
            shifted = shift_multi("\\".join(values), self.pseudonym.date_offset_days, vr)
            set_value(dataset, tag, vr, shifted.split("\\") if any(values) else None, context.codec)
        elif vr in ("DA", "DT"):
            set_value(dataset, tag, vr, None, context.codec)
        elif vr in TEXT_VRS:
            self._scrub(dataset, tag, vr, context, patterns=True)
        # TM under the modified-dates option keeps its time of day; other VRs hold no free text.

    def _scrub(self, dataset: Dataset, tag: BaseTag, vr: str, context: _Context, patterns: bool) -> None:
        values = string_values(dataset, tag, vr, context.codec)
        cleaned = [clean_text(v, self.identifiers, patterns) for v in values]
        if cleaned != values:
            set_value(dataset, tag, vr, cleaned, context.codec)

    def _private(self, dataset: Dataset, tag: BaseTag, context: _Context) -> None:
        if tag.element < 0x1000:  # private creators and reserved elements: kept only if used below
            return
        creator = dataset.get((tag.group, tag.element >> 8))
        allowed = (
            creator is not None
            and SafePrivateKey(tag.group, str(creator.value).strip(), tag.element & 0xFF) in self.safe_private
        )
        if allowed:
            self._count(tag, Action.KEEP, "(private)")
            if raw_vr(dataset, tag) == "SQ":
                for item in dataset[tag].value or ():
                    self.walk(item, context)
        else:
            self._count(tag, Action.REMOVE, "(private)")
            del dataset[tag]

    def _drop_unused_private_creators(self, dataset: Dataset) -> None:
        used = {(t.group, t.element >> 8) for t in dataset.keys() if t.is_private and t.element >= 0x1000}
        for tag in [t for t in dataset.keys() if t.is_private and t.element < 0x1000]:
            if (tag.group, tag.element) not in used:
                del dataset[tag]

    def _count(self, tag: BaseTag, action: Action, name: str | None = None) -> None:
        self.counts[(name or int(tag), action)] += 1


def patient_identity(dataset: Dataset) -> PatientIdentity:
    codec = codec_for(dataset, SIMPLE_CODECS[""])
    return PatientIdentity(
        *(
            first_string(dataset, keyword, codec).strip()
            for keyword in ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID")
        )
    )


def _date_differences(identifiers: set[str]) -> frozenset[int]:
    dates = {date for text in identifiers if (date := parse_date(text[:8])) is not None}
    return frozenset((a - b).days for a in dates for b in dates if a != b)


def _set_text(dataset: Dataset, keyword: str, value: object) -> None:
    """Set an ASCII value as a raw element where possible (see :func:`set_value`).

    ASCII is spelled the same in every DICOM character set (PS3.5 6.1), so the value is encoded
    once, whatever the dataset's character set; anything else becomes a DataElement.
    """
    tag, vr = _tag_and_vr(keyword)
    set_value(dataset, tag, vr, value, "ascii")


@cache
def _tag_and_vr(keyword: str) -> tuple[BaseTag, str]:
    tag = keyword_tag(keyword)
    return tag, dictionary_VR(tag)


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


@lru_cache(maxsize=64)
def _encoded_code_items(codes: tuple[tuple[str, str], ...], implicit: bool, little: bool) -> bytes:
    """The items of a method code sequence as pydicom writes them: the same for every object."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    for value, meaning in codes:
        write_sequence_item(buffer, _code_item(value, meaning), [default_encoding])
    return buffer.getvalue()


def _set_method_codes(dataset: Dataset, codes: list[tuple[str, str]]) -> None:
    """DeidentificationMethodCodeSequence, encoded once per run and encoding where possible.

    A dataset read from a file gets the sequence as pydicom reads one: a raw element, parsed when
    accessed and otherwise copied on write. Building the items for every object cost more than
    everything else :func:`_record_method` does.
    """
    implicit, little = dataset.original_encoding
    if implicit is None or little is None:
        dataset.DeidentificationMethodCodeSequence = [_code_item(value, meaning) for value, meaning in codes]
        return
    value = _encoded_code_items(tuple(codes), implicit, little)
    dataset._dict[METHOD_CODE_SEQUENCE] = RawDataElement(
        METHOD_CODE_SEQUENCE, "SQ", len(value), value, 0, implicit, little
    )


def _record_method(dataset: Dataset, profile: Profile, pseudonym: Pseudonym, clean_pixel_data: bool) -> None:
    """PS3.15 E.1.1 items 6-8 and E.3.6: say what was done, with CID 7050 codes."""
    _set_text(dataset, "PatientID", pseudonym.subject)
    _set_text(dataset, "PatientName", pseudonym.subject)
    _set_text(dataset, "PatientIdentityRemoved", "YES")
    _set_text(dataset, "DeidentificationMethod", profile.description(clean_pixel_data))
    _set_method_codes(dataset, profile.method_codes(clean_pixel_data))
    options = profile.options
    _set_text(
        dataset,
        "LongitudinalTemporalInformationModified",
        "MODIFIED"
        if options.retain_longitudinal_modified_dates
        else "UNMODIFIED"
        if options.retain_longitudinal_full_dates
        else "REMOVED",
    )


def _rebuild_file_meta(dataset: Dataset) -> None:
    """PS3.10 7.1: only what the new file needs, nothing carried over from the source's sender."""
    meta = FileMetaDataset()
    meta.set_original_encoding(False, True, default_encoding)  # explicit VR little endian, always
    meta.FileMetaInformationVersion = b"\x00\x01"
    _set_text(meta, "MediaStorageSOPClassUID", peek(dataset, "SOPClassUID"))
    _set_text(meta, "MediaStorageSOPInstanceUID", peek(dataset, "SOPInstanceUID"))
    _set_text(meta, "TransferSyntaxUID", peek(dataset.file_meta, "TransferSyntaxUID"))
    _set_text(meta, "ImplementationClassUID", PYDICOM_IMPLEMENTATION_UID)
    _set_text(meta, "ImplementationVersionName", "INSITE_DEID")
    dataset.file_meta = meta


def deidentify_dataset(
    dataset: Dataset,
    profile: Profile,
    key: SiteKey,
    safe_private: frozenset[SafePrivateKey] = frozenset(),
    clean_pixel_data: bool = False,
) -> DeidOutcome:
    """De-identify ``dataset`` in place (a parsed file with file meta); pixel data is not touched."""
    identifiers = collect_identifiers(dataset, profile)
    pseudonym = key.pseudonym(patient_identity(dataset), _date_differences(identifiers))
    walker = _Walker(profile, key, pseudonym, safe_private, identifiers)
    with pydicom_config.disable_value_validation():
        walker.walk(dataset, _Context())
        _record_method(dataset, profile, pseudonym, clean_pixel_data)
        if SOP_INSTANCE_UID in dataset._dict and SOP_CLASS_UID in dataset._dict:
            _rebuild_file_meta(dataset)
    actions = Counter(
        {
            (name if isinstance(name, str) else keyword(name), action.value): count
            for (name, action), count in walker.counts.items()
        }
    )
    return DeidOutcome(pseudonym.subject, identifiers, actions)
