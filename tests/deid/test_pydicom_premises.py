"""Tripwires for the parts of pydicom that de-identification relies on beyond its public API.

pyproject.toml keeps pydicom below the next minor release; when a release is allowed in, these fail
first and name the premise that moved, instead of the de-identification silently doing less.
"""

from __future__ import annotations

import inspect
from io import BytesIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def _written_and_read() -> Dataset:
    dataset = Dataset()
    dataset.PatientName = "Doe^Jane"
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    dataset.save_as(buffer, implicit_vr=False, little_endian=True)
    return dcmread(BytesIO(buffer.getvalue()), force=True)


def test_dataset_dict_holds_raw_elements_until_read():
    """siteprep.deid.elements reads values without converting (``Dataset._dict``, raw elements)."""
    read = _written_and_read()
    raw = read._dict[BaseTag(0x00100010)]
    assert isinstance(raw, RawDataElement) and raw.value == b"Doe^Jane"
    assert all(isinstance(tag, BaseTag) for tag in read._dict)


def test_raw_data_element_fields():
    """siteprep.deid.engine and writing build RawDataElements positionally."""
    assert RawDataElement._fields[:7] == (
        "tag",
        "VR",
        "length",
        "value",
        "value_tell",
        "is_implicit_VR",
        "is_little_endian",
    )


def test_fileset_stage_and_add_walk():
    """siteprep.deid.dicomdir cleans ``FileSet._stage['t']`` and skips ``add``'s walk over itself."""
    file_set = FileSet()
    assert hasattr(file_set._stage["t"], "cleanup")
    file_set._stage["t"].cleanup()
    assert "for ii in self" in inspect.getsource(FileSet.add)
