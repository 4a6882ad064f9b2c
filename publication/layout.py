"""Where things are in an export folder; shared by the writer and by verify.

::

    OUT/
      bundle/                  the MONAI bundle (what a user loads)
        LICENSE  configs/metadata.json  configs/inference.json  models/model.pt  models/model.ts
        docs/README.md         model card
      manifest.toml            the approved manifest, byte for byte
      approvals.json           the collected site approvals
      consortium-keys/<site>.pub  public keys of the approving sites, as the coordinator knew them
      assets/<kind>/<file>     byte-exact copies of the approved asset files (run record, checkpoint, ...)
      SHA256SUMS               every file above, ``sha256sum -c`` compatible
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from publication.manifest.schema import Asset, AssetFile

BUNDLE = "bundle"
MANIFEST = "manifest.toml"
APPROVALS = "approvals.json"
KEYS = "consortium-keys"
ASSETS = "assets"
SUMS = "SHA256SUMS"

METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
MODEL = "models/model.pt"
TORCHSCRIPT = "models/model.ts"
CARD = "docs/README.md"
LICENSE = "LICENSE"

SCHEMA_FILE = Path(__file__).with_name("monai-bundle-meta-schema-20240725.json")
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"


def asset_copy(out: Path, asset: Asset, file: AssetFile) -> Path:
    """Where the export keeps its copy of one asset file."""
    return out / ASSETS / asset.kind / PurePosixPath(file.path).name
