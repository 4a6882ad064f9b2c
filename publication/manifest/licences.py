"""Which licence an asset may carry: a known SPDX identifier, or a custom text the manifest provides.

Seed 000, section D: software licences (permissive or copyleft) for code; Creative Commons for
"non-code" assets such as trained weights and datasets. A custom licence (for example seed 003's
purpose-restricted AIDA-style terms) is written as ``LicenseRef-<name>`` with its full text in
``licence_text``, as SPDX prescribes for licences not on its list.

The list below is a curated subset of the SPDX License List (the identifiers researchers actually
use for code, weights and data); it is kept offline on purpose, so checking never needs a network.
"""

from __future__ import annotations

import re

from publication.manifest.schema import AssetTerms

SOFTWARE_LICENCES = frozenset(
    {
        "0BSD",
        "AFL-3.0",
        "AGPL-3.0-only",
        "AGPL-3.0-or-later",
        "Apache-2.0",
        "Artistic-2.0",
        "BSD-2-Clause",
        "BSD-3-Clause",
        "BSD-3-Clause-Clear",
        "BSD-4-Clause",
        "BSL-1.0",
        "CECILL-2.1",
        "ECL-2.0",
        "EPL-1.0",
        "EPL-2.0",
        "EUPL-1.2",
        "GPL-2.0-only",
        "GPL-2.0-or-later",
        "GPL-3.0-only",
        "GPL-3.0-or-later",
        "ISC",
        "LGPL-2.1-only",
        "LGPL-2.1-or-later",
        "LGPL-3.0-only",
        "LGPL-3.0-or-later",
        "MIT",
        "MIT-0",
        "MPL-2.0",
        "MS-PL",
        "NCSA",
        "OSL-3.0",
        "PostgreSQL",
        "Unlicense",
        "UPL-1.0",
        "WTFPL",
        "Zlib",
    }
)

CREATIVE_COMMONS = frozenset(
    {
        "CC0-1.0",
        "CC-BY-3.0",
        "CC-BY-4.0",
        "CC-BY-SA-3.0",
        "CC-BY-SA-4.0",
        "CC-BY-NC-3.0",
        "CC-BY-NC-4.0",
        "CC-BY-NC-SA-3.0",
        "CC-BY-NC-SA-4.0",
        "CC-BY-ND-3.0",
        "CC-BY-ND-4.0",
        "CC-BY-NC-ND-3.0",
        "CC-BY-NC-ND-4.0",
        "CDLA-Permissive-2.0",
        "CDLA-Sharing-1.0",
        "ODbL-1.0",
        "PDDL-1.0",
    }
)

_LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.-]+$")
_NON_CODE = {"weights", "training_data"}


def is_custom(licence: str) -> bool:
    return bool(_LICENSE_REF.match(licence))


def licence_problem(asset: AssetTerms) -> str | None:
    """Why ``asset``'s licence is unacceptable, or None when it is fine."""
    licence = asset.licence
    if not licence:
        return "no licence given (set 'licence' to an SPDX identifier)"
    if is_custom(licence):
        if not (asset.licence_text or "").strip():
            return f"custom licence '{licence}' needs its full text in 'licence_text'"
        return None
    if asset.licence_text:
        return f"'licence_text' is only for custom 'LicenseRef-...' licences, not for '{licence}'"
    if asset.kind in _NON_CODE:
        if licence in CREATIVE_COMMONS:
            return None
        if licence in SOFTWARE_LICENCES:
            return (
                f"'{licence}' is a software licence; {asset.kind} needs a Creative Commons/data "
                "licence (e.g. CC-BY-4.0) or a LicenseRef-... text"
            )
    elif licence in SOFTWARE_LICENCES or licence in CREATIVE_COMMONS:
        return None
    return f"'{licence}' is not a known SPDX identifier (nor a LicenseRef-... with its text)"
