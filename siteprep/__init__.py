"""The site administrator's tools: de-identification, defacing, ingest, QA; run before any federation.

Every one of them may read compressed DICOM pixel data, so the package registers the pixel codec
pydicom lacks (:mod:`siteprep.pixel_codecs`) when it is imported.
"""

from siteprep.pixel_codecs import register as _register_pixel_codecs

_register_pixel_codecs()
