"""Defacing of head CT and MR series: the Clean Recognizable Visual Features option (PS3.15 E.3.2).

A head template that carries a face mask (pydeface's, reduced and shipped in ``data/``) is
registered to each head series with SimpleITK, and the voxels under the registered mask are set
to air, as the registration-based defacers (pydeface, fsl_deface, mri_deface) do. The pieces, one
job each: :mod:`.screening` (is this series a head, from its header and field of view),
:mod:`.template`, :mod:`.registration`, :mod:`.quality` (does the fit deserve trust),
:mod:`.masking`, :mod:`.derived` (the defaced series as valid DICOM), :mod:`.picture` (the QA
picture) and :mod:`.tree` (a whole de-identified folder, with quarantine and report).
"""
