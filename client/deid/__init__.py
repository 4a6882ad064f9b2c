"""Site-side DICOM de-identification (DICOM PS3.15 Annex E) that fails closed.

Entry points: :func:`client.deid.run.deidentify_tree` (a folder of DICOM files to a de-identified
folder, a quarantine and an audit report), :func:`client.deid.scan.scan_tree` (the independent
residual-identifier check) and :mod:`client.deid.synthetic` (raw DICOM with planted identifiers
for tests, the benchmark and the demo).
"""
