"""Apply the resolved profile to every element of one dataset (PS3.15 E.1, E.3).

Every element is visited: top level, every item of every sequence at any depth, private blocks
and the file meta (rebuilt, PS3.10 7.1). Per element the action is the table's (after options),
or for attributes the table does not list a fail-closed rule by VR: names are emptied, dates
follow the temporal option, UIDs are replaced, undecodable public UN elements are removed. Every
text value that is kept is scrubbed of the object's own identifying values.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.datadict import dictionary_has_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from client.deid.elements import as_list, keyword, raw_bytes, raw_vr
from client.deid.identifiers import collect_identifiers, is_registered_uid
from client.deid.keys import PatientIdentity, Pseudonym, SiteKey
from client.deid.profile import Action, Profile
from client.deid.values import TEXT_VRS, clean_text, dummy, shift_multi

CURVE_GROUPS = range(0x5000, 0x5020, 2)    # (50xx,xxxx) repeating group, PS3.15 Table E.1-1
OVERLAY_GROUPS = range(0x6000, 0x6020, 2)  # (60xx,3000) Overlay Data, (60xx,4000) Comments


@dataclass(frozen=True)
class SafePrivateKey:
    group: int
    creator: str
    element: int


@dataclass
class Outcome:
    """What de-identifying one dataset did: actions per attribute and the subject it belongs to."""

    subject: str
    identifiers: set[str]  # the identifying values the object held before (for the run's scan)
    actions: Counter = field(default_factory=Counter)  # (keyword, action code) -> count


# Character sets whose bytes spell ASCII identifiers as ASCII, so a raw value can be searched
# without decoding (PS3.5 6.1.2.3); any other set takes the decoding path.
_ASCII_COMPATIBLE = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6"})


class _Walker:
    def __init__(self, profile: Profile, key: SiteKey, pseudonym: Pseudonym,
                 safe_private: frozenset[SafePrivateKey], identifiers: set[str]) -> None:
        self.profile = profile
        self.key = key
        self.pseudonym = pseudonym
        self.safe_private = safe_private
        self.identifiers = identifiers
        self.raw_needles = ([i.lower().encode("ascii") for i in identifiers]
                            if all(i.isascii() for i in identifiers) else None)
        self.counts: Counter = Counter()
        options = profile.options
        self.date_action = (Action.KEEP if options.retain_longitudinal_full_dates
                            else Action.CLEAN if options.retain_longitudinal_modified_dates else Action.EMPTY)

    def walk(self, dataset: Dataset, raw_searchable: bool) -> None:
        if "SpecificCharacterSet" in dataset:
            charsets = as_list(dataset.SpecificCharacterSet)
            raw_searchable = all(str(c or "").strip() in _ASCII_COMPATIBLE for c in charsets)
        for tag in list(dataset.keys()):
            if tag.is_private:
                self._private(dataset, tag, raw_searchable)
            elif tag.element == 0 or tag.group in CURVE_GROUPS or tag.group in OVERLAY_GROUPS:
                # Group lengths are recomputed on write; curves and whole overlay groups go, because
                # bitmaps and curves cannot be cleaned automatically and a partial overlay is invalid.
                self._count(tag, Action.REMOVE)
                del dataset[tag]
            else:
                vr = raw_vr(dataset, tag)
                action = self.profile.action_for(int(tag)) or self._unlisted(tag, vr)
                self._apply(dataset, tag, vr, action, raw_searchable)
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

    def _apply(self, dataset: Dataset, tag: BaseTag, vr: str, action: Action, raw_searchable: bool) -> None:
        self._count(tag, action)
        if action is Action.REMOVE:
            del dataset[tag]
        elif vr == "SQ":
            if action is Action.EMPTY:
                dataset[tag].value = Sequence()
            else:  # K, C, D and U* keep the items and de-identify inside them
                for item in dataset[tag].value or ():
                    self.walk(item, raw_searchable)
        elif action is Action.EMPTY:
            dataset[tag].value = None
        elif action is Action.UID or (action is Action.DUMMY and vr == "UI"):
            self._replace_uids(dataset[tag])
        elif action is Action.DUMMY:
            dataset[tag].value = dummy(vr)
        elif action is Action.CLEAN:
            self._clean(dataset[tag])
        elif vr in TEXT_VRS and not self._surely_clean(dataset, tag, raw_searchable):
            element = dataset[tag]
            if element.value:
                element.value = self._scrub(element.value, patterns=False)

    def _surely_clean(self, dataset: Dataset, tag: BaseTag, raw_searchable: bool) -> bool:
        """True when a kept raw text value holds none of the object's identifiers (no decoding)."""
        raw = raw_bytes(dataset, tag)
        if raw is None or not raw_searchable or self.raw_needles is None:
            return False
        lowered = raw.lower()
        return not any(needle in lowered for needle in self.raw_needles)

    def _clean(self, element: DataElement) -> None:
        vr = element.VR
        if vr in ("DA", "DT") and self.date_action is Action.CLEAN:
            if element.value:
                element.value = shift_multi(str(element.value), self.pseudonym.date_offset_days, vr)
        elif vr in ("DA", "DT"):
            element.value = None
        elif vr in TEXT_VRS and element.value:
            element.value = self._scrub(element.value, patterns=True)
        # TM under the modified-dates option keeps its time of day; other VRs hold no free text.

    def _scrub(self, value: object, patterns: bool) -> object:
        values = [clean_text(str(v), self.identifiers, patterns) for v in as_list(value)]
        return values if len(values) > 1 else values[0]

    def _replace_uids(self, element: DataElement) -> None:
        if not element.value:
            return
        values = [v if is_registered_uid(str(v)) else self.key.uid(str(v)) for v in as_list(element.value)]
        element.value = values if len(values) > 1 else values[0]

    def _private(self, dataset: Dataset, tag: BaseTag, raw_searchable: bool) -> None:
        if tag.element < 0x1000:  # private creators and reserved elements: kept only if used below
            return
        creator = dataset.get((tag.group, tag.element >> 8))
        allowed = creator is not None and SafePrivateKey(
            tag.group, str(creator.value).strip(), tag.element & 0xFF) in self.safe_private
        if allowed:
            self._count(tag, Action.KEEP, "(private)")
            if raw_vr(dataset, tag) == "SQ":
                for item in dataset[tag].value or ():
                    self.walk(item, raw_searchable)
        else:
            self._count(tag, Action.REMOVE, "(private)")
            del dataset[tag]

    def _drop_unused_private_creators(self, dataset: Dataset) -> None:
        used = {(t.group, t.element >> 8) for t in dataset.keys() if t.is_private and t.element >= 0x1000}
        for tag in [t for t in dataset.keys() if t.is_private and t.element < 0x1000]:
            if (tag.group, tag.element) not in used:
                del dataset[tag]

    def _count(self, tag: BaseTag, action: Action, name: str | None = None) -> None:
        self.counts[(name or int(tag), action.value)] += 1


def patient_identity(dataset: Dataset) -> PatientIdentity:
    def text(keyword: str) -> str:
        return str(dataset.get(keyword, "") or "").strip()

    return PatientIdentity(text("PatientID"), text("IssuerOfPatientID"), text("PatientName"),
                           text("PatientBirthDate"), text("StudyInstanceUID"))


def _date_differences(identifiers: set[str]) -> frozenset[int]:
    dates = set()
    for text in identifiers:
        try:
            dates.add(dt.datetime.strptime(text[:8], "%Y%m%d").date())
        except ValueError:
            continue
    return frozenset((a - b).days for a in dates for b in dates if a != b)


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _record_method(dataset: Dataset, profile: Profile, pseudonym: Pseudonym, clean_pixel_data: bool) -> None:
    """PS3.15 E.1.1 items 6-8 and E.3.6: say what was done, with CID 7050 codes."""
    dataset.PatientID = pseudonym.subject
    dataset.PatientName = pseudonym.subject
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = profile.description(clean_pixel_data)
    dataset.DeidentificationMethodCodeSequence = [_code_item(value, meaning)
                                                  for value, meaning in profile.method_codes(clean_pixel_data)]
    options = profile.options
    dataset.LongitudinalTemporalInformationModified = (
        "MODIFIED" if options.retain_longitudinal_modified_dates
        else "UNMODIFIED" if options.retain_longitudinal_full_dates else "REMOVED")


def _rebuild_file_meta(dataset: Dataset) -> None:
    """PS3.10 7.1: only what the new file needs, nothing carried over from the source's sender."""
    old = dataset.file_meta
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = old.TransferSyntaxUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "INSITE_DEID"
    dataset.file_meta = meta


def deidentify_dataset(dataset: Dataset, profile: Profile, key: SiteKey,
                       safe_private: frozenset[SafePrivateKey] = frozenset(),
                       clean_pixel_data: bool = False) -> Outcome:
    """De-identify ``dataset`` in place (a parsed file with file meta); pixel data is not touched."""
    identifiers = collect_identifiers(dataset, profile)
    pseudonym = key.pseudonym(patient_identity(dataset), _date_differences(identifiers))
    walker = _Walker(profile, key, pseudonym, safe_private, identifiers)
    with pydicom_config.disable_value_validation():
        walker.walk(dataset, raw_searchable=True)
        _record_method(dataset, profile, pseudonym, clean_pixel_data)
        if "SOPInstanceUID" in dataset and "SOPClassUID" in dataset:
            _rebuild_file_meta(dataset)
    actions = Counter({(name if isinstance(name, str) else keyword(name), code): count
                       for (name, code), count in walker.counts.items()})
    return Outcome(pseudonym.subject, identifiers, actions)
