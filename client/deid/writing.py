"""Encode a de-identified dataset as a DICOM file (PS3.10 7.1) in one buffer.

``dcmwrite`` deep-copies the file meta before writing it, to protect the caller's copy while it
fills in what is missing. Here the engine has just rebuilt a complete file meta
(:func:`client.deid.engine._rebuild_file_meta`), so the preamble, the meta group and the data set
are written directly; only the deflated transfer syntax (compressed after encoding) and
transfer syntaxes pydicom cannot name an encoding for go through ``dcmwrite``.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

EMPTY_PREAMBLE = b"\x00" * 128  # a preamble may hold anything (PS3.10 7.1, e.g. TIFF tags)


def encode_file(dataset: Dataset) -> bytes:
    """The bytes of ``dataset`` as a file with an empty preamble and its (rebuilt) file meta."""
    dataset.preamble = EMPTY_PREAMBLE
    syntax = dataset.file_meta.TransferSyntaxUID
    buffer = DicomBytesIO()
    if syntax == DeflatedExplicitVRLittleEndian or not syntax.is_transfer_syntax or syntax.is_private:
        dcmwrite(buffer, dataset, enforce_file_format=True)
        return buffer.getvalue()
    buffer.write(EMPTY_PREAMBLE + b"DICM")
    write_file_meta_info(buffer, dataset.file_meta, enforce_standard=True)
    buffer.is_implicit_VR, buffer.is_little_endian = syntax.is_implicit_VR, syntax.is_little_endian
    if "PixelData" in dataset:  # PS3.5 A.4: encapsulated pixel data has undefined length
        dataset["PixelData"].is_undefined_length = syntax.is_compressed
    write_dataset(buffer, dataset)
    return buffer.getvalue()
