"""Raw DICOM with planted identifiers, for tests, the benchmark and the demo.

:func:`write_series` turns a 3D numpy volume into a CT or MR series (one Explicit VR Little
Endian file per slice) that carries a made-up patient's identifiers everywhere a real hospital
export does: the patient and study modules, free text, a nested request sequence, the file meta
(source AE title) and a private block with its own nested sequence. :func:`write_segmentation`
adds a DICOM-SEG for a label volume on the same grid (highdicom copies the patient and study
attributes from the source images, as a real segmentation tool would). Every planted value is
listed by :meth:`PlantedPatient.identifiers`, so a test can prove that none of them survives.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

PRIVATE_CREATOR = "INSITE SYNTHETIC PHI"
PRIVATE_GROUP = 0x0029
MAX_STORED = 4095  # 12 bits stored in 16 allocated, as most CT and MR scanners write
_GIVEN = ("Alice", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Goran", "Hanna", "Ivo", "Jasmin")
_FAMILY = ("Lindqvist", "Okafor", "Moreau", "Tanaka", "Kowalski", "Haddad", "Brennan", "Ferreira")
_STREETS = ("Elm Street", "Harbour Road", "Kastanienallee", "Rue Lepic", "Via Roma")


@dataclass(frozen=True)
class PlantedPatient:
    """A made-up patient and study whose every value must disappear in de-identification."""

    name: str
    patient_id: str
    other_id: str
    birth_date: str
    address: str
    telephone: str
    institution: str
    physician: str
    operator: str
    accession: str
    study_id: str
    study_date: str
    study_uid: str

    def identifiers(self) -> list[str]:
        """Every planted identifying value (names also by component)."""
        parts = [p for person in (self.name, self.physician, self.operator) for p in person.split("^")]
        return [
            self.name,
            self.patient_id,
            self.other_id,
            self.birth_date,
            self.address,
            self.telephone,
            self.institution,
            self.physician,
            self.operator,
            self.accession,
            self.study_id,
            self.study_date,
            self.study_uid,
            *parts,
        ]


def random_patient(rng: random.Random) -> PlantedPatient:
    """A distinct fake patient; identifiers are long enough to be unambiguous in a search."""

    def person() -> str:
        return f"{rng.choice(_FAMILY)}{rng.randrange(100, 999)}^{rng.choice(_GIVEN)}{rng.randrange(100, 999)}"

    birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 25000))
    study = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(0, 3000))
    return PlantedPatient(
        name=person(),
        patient_id=f"MRN{rng.randrange(10**7, 10**8)}",
        other_id=f"NHS{rng.randrange(10**8, 10**9)}",
        birth_date=birth.strftime("%Y%m%d"),
        address=f"{rng.randrange(1, 300)} {rng.choice(_STREETS)} Townsville{rng.randrange(100, 999)}",
        telephone=f"+44 {rng.randrange(1000, 9999)} {rng.randrange(100000, 999999)}",
        institution=f"St Elsewhere {rng.randrange(100, 999)} Hospital",
        physician=person(),
        operator=person(),
        accession=f"ACC{rng.randrange(10**7, 10**8)}",
        study_id=f"STUDY{rng.randrange(10**5, 10**6)}",
        study_date=study.strftime("%Y%m%d"),
        study_uid=generate_uid(),
    )


def _private_block(ds: Dataset, patient: PlantedPatient) -> None:
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", patient.name.replace("^", " "))
    block.add_new(0x02, "LO", patient.patient_id)
    nested = Dataset()
    nested.add_new(0x00100010, "PN", patient.name)
    nested.add_new(0x00100030, "DA", patient.birth_date)
    block.add_new(0x03, "SQ", [nested])


def _request(patient: PlantedPatient) -> Dataset:
    item = Dataset()
    item.AccessionNumber = patient.accession
    item.RequestedProcedureID = f"RP{patient.accession}"
    item.RequestingPhysician = patient.physician
    item.StudyInstanceUID = patient.study_uid
    item.ReasonForTheRequestedProcedure = f"follow-up for {patient.name.replace('^', ' ')} ({patient.patient_id})"
    return item


def fitted_rescale(volume: np.ndarray) -> tuple[str, str]:
    """(RescaleSlope, RescaleIntercept) as DICOM DS strings mapping ``volume`` onto 12 stored bits.

    A scanner does the same to keep real-valued or wide-range data: the slope is at least 1, so
    whole-number data stays exact, and the strings are what the stored values are computed from.
    """
    low, high = float(np.min(volume)), float(np.max(volume))
    intercept = float(np.floor(low))
    slope = max(1.0, (high - intercept) / MAX_STORED)
    return f"{slope:.9g}", f"{intercept:.9g}"


def new_instance(sop_class: UID, patient: PlantedPatient) -> Dataset:
    """A new object's file meta, SOP identity, and the patient and study attributes every modality
    writes, holding ``patient``'s planted identifiers (the caller adds its own series and image)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Manufacturer = "INSITE SYNTHETIC"
    ds.InstitutionName = patient.institution
    ds.ReferringPhysicianName = patient.physician
    ds.OperatorsName = patient.operator
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = patient.study_date
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.AccessionNumber = patient.accession
    ds.StudyID = patient.study_id
    ds.StudyInstanceUID = patient.study_uid
    return ds


def write_series(
    volume: np.ndarray,
    out_dir: Path,
    patient: PlantedPatient,
    *,
    modality: str = "CT",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    series_number: int = 1,
    series_uid: str | None = None,
    rescale: tuple[str, str] | None = None,
    body_part: str | None = None,
) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice; returns the paths in slice order.

    ``volume`` is (slices, rows, columns) in modality units. Without ``rescale`` they are taken as
    integers (CT: Hounsfield units, stored with intercept -1024 as unsigned; MR: units >= 0) and
    clipped to 12 stored bits; ``rescale`` = (slope, intercept) from :func:`fitted_rescale` keeps
    any range. ``spacing`` is (slice, row, column) in mm and ``origin`` the patient position
    (x, y, z) in mm of the first voxel; slices advance along +z with axial orientation. Files are
    named ``slice_NNNN.dcm`` so the name holds nothing. ``body_part`` sets BodyPartExamined
    (scanners leave it out as often as not).
    """
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (slices, rows, columns), got shape {volume.shape}")
    sop_class = {"CT": CTImageStorage, "MR": MRImageStorage}[modality]
    slope, intercept = rescale or ("1", "-1024" if modality == "CT" else "0")
    scaled = np.rint((np.asarray(volume, dtype=np.float64) - float(intercept)) / float(slope))
    stored = np.clip(scaled, 0, MAX_STORED).astype(np.uint16)
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    previous_uid = ""
    for index, plane in enumerate(stored):
        ds = new_instance(sop_class, patient)
        ds.file_meta.SourceApplicationEntityTitle = "ELSEWHERE_CT1"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Modality = modality
        if body_part:
            ds.BodyPartExamined = body_part
        ds.InstitutionAddress = patient.address
        ds.StationName = "ELSEWHERE-CT1"
        ds.OtherPatientIDs = patient.other_id
        ds.PatientAddress = patient.address
        ds.PatientTelephoneNumbers = patient.telephone
        ds.AcquisitionDate = patient.study_date
        ds.StudyDescription = f"{modality} for {patient.name.replace('^', ' ')}"
        ds.SeriesDescription = f"series {series_number} {patient.patient_id}"
        ds.ImageComments = f"Patient {patient.name} MRN {patient.patient_id} tel {patient.telephone}"
        ds.RequestAttributesSequence = [_request(patient)]
        if previous_uid:  # a reference inside a sequence that must follow the UID change
            reference = Dataset()
            reference.ReferencedSOPClassUID = sop_class
            reference.ReferencedSOPInstanceUID = previous_uid
            ds.ReferencedImageSequence = [reference]
        previous_uid = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = series_number
        ds.InstanceNumber = index + 1
        ds.BurnedInAnnotation = "NO"
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2]) + index * float(spacing[0])]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
        ds.SliceThickness = float(spacing[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
        ds.PixelData = plane.tobytes()
        _private_block(ds, patient)
        path = out_dir / f"slice_{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_segmentation(
    label: np.ndarray, series_files: Sequence[Path], out_path: Path, names: dict[int, str] | None = None
) -> Path:
    """Write a binary DICOM-SEG for ``label`` (same shape as the series' volume; 0 = background).

    One segment per label value present; ``names`` gives their labels (default "label N").
    """
    sources = [dcmread(path) for path in series_files]
    values = [int(v) for v in np.unique(label) if v != 0]
    if not values:
        raise ValueError("label volume is empty: nothing to segment")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=(names or {}).get(value, f"label {value}"),
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, value in enumerate(values, start=1)
    ]
    masks = np.zeros(label.shape, dtype=np.uint8)
    for number, value in enumerate(values, start=1):
        masks[label == value] = number
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=100,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="INSITE SYNTHETIC",
        manufacturer_model_name="label tool",
        software_versions="1",
        device_serial_number="SN-ELSEWHERE-7",
        content_creator_name=str(sources[0].OperatorsName),
        omit_empty_frames=False,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out_path)
    return out_path
