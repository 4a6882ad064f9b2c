"""The one pixel codec pydicom lacks under a permissive licence: 12-bit JPEG Extended.

A PACS exports JPEG Lossless, JPEG baseline/extended, JPEG-LS, JPEG 2000 and RLE. pydicom decodes
all of them through plugins; the ones insite depends on are GDCM (JPEG processes 1, 2/4 and 14,
JPEG-LS, JPEG 2000), pylibjpeg's openjpeg and RLE plugins, and pyjpegls. The exception is JPEG
Extended with 12-bit samples (ISO 10918-1 Process 4, older CT exports): pydicom's GDCM and Pillow
plugins refuse it, and its only plugin that reads it, pylibjpeg-libjpeg, is GPL-3.0, which this
Apache-2.0 project keeps out of its dependencies. imagecodecs (BSD-3) bundles libjpeg-turbo 3,
which reads 12-bit JPEG, so it is added here as one more pydicom decoder plugin, through pydicom's
own plugin interface (pydicom does the rest: pixel representation, shape, rescale).

It is put first for JPEG Extended grey images of either precision: pydicom logs a traceback for
every plugin that refuses a frame before one succeeds, so with GDCM and Pillow first each 12-bit
file would leave two tracebacks in the site's log. Colour JPEG Extended is left to pydicom's own
plugins (libjpeg-turbo would convert its colour space, and pydicom expects the stored one).
"""

from __future__ import annotations

import imagecodecs
from pydicom.pixels import get_decoder
from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.uid import JPEGExtended12Bit

PLUGIN = "insite-imagecodecs"
# pydicom 3.0's own plugins for JPEG Extended, in its order (pydicom/pixels/decoders/base.py): they
# are re-added after this one (tests/deid/test_pydicom_premises.py checks the list).
PYDICOM_PLUGINS = {
    "gdcm": ("pydicom.pixels.decoders.gdcm", "_decode_frame"),
    "pylibjpeg": ("pydicom.pixels.decoders.pylibjpeg", "_decode_frame"),
    "pillow": ("pydicom.pixels.decoders.pillow", "_decode_frame"),
}
DECODER_DEPENDENCIES = {JPEGExtended12Bit: ("imagecodecs",)}


def is_available(syntax: str) -> bool:
    """pydicom's plugin interface: whether this plugin can decode ``syntax`` here."""
    return syntax == JPEGExtended12Bit and bool(imagecodecs.JPEG8.available)


def decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One frame's samples, as stored (pydicom's decoder plugin contract)."""
    if runner.samples_per_pixel != 1:
        raise NotImplementedError("colour JPEG Extended is left to the other plugins (its colour space would change)")
    return imagecodecs.jpeg8_decode(src).tobytes()


def register() -> None:
    """Make this plugin the first of pydicom's JPEG Extended decoder, once per process."""
    decoder = get_decoder(JPEGExtended12Bit)
    if PLUGIN in decoder.available_plugins:
        return
    theirs = [label for label in PYDICOM_PLUGINS if label in decoder.available_plugins]
    for label in theirs:
        decoder.remove_plugin(label)
    decoder.add_plugin(PLUGIN, (__name__, "decode_frame"))
    for label in theirs:
        decoder.add_plugin(label, PYDICOM_PLUGINS[label])
