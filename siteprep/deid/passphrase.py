"""Where the passphrase of the site's key file comes from, when nobody types it.

In this order (the CLI asks on the terminal only when none of them gives one):

1. a passphrase file named on the command line (``--passphrase-file``);
2. the environment variable ``INSITE_DEID_PASSPHRASE``, for scripts and services;
3. ``passphrase_file`` in the site's ``deid.toml``.

A passphrase file holds the passphrase, one trailing newline allowed, and must be readable by
its owner only, as the key file must. Keep it apart from the key (another disk, a secrets store):
with both, anybody holding a copy of the key file holds the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from siteprep.deid.errors import KeyFileError
from siteprep.deid.keyfile import Passphrase
from siteprep.deid.settings import DeidSettings

ENV_VAR = "INSITE_DEID_PASSPHRASE"
MIN_NEW_LENGTH = 12  # a new passphrase; scrypt slows guessing, it does not make a short one safe


def read_passphrase_file(path: Path) -> Passphrase:
    """The passphrase in ``path``; refused if others can read the file, or if it is empty."""
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyFileError(f"passphrase file {path} is readable by others (mode {mode:o}); chmod 600 it")
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise KeyFileError(f"passphrase file {path} cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"passphrase file {path} is not UTF-8 text") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise KeyFileError(f"passphrase file {path} is empty")
    return Passphrase(value, f"passphrase file {path}")


def configured_passphrase(
    settings: DeidSettings, passphrase_file: Path | None = None, environ: Mapping[str, str] = os.environ
) -> Passphrase | None:
    """The passphrase from the first source that gives one (see the module's order), else None."""
    if passphrase_file is not None:
        return read_passphrase_file(passphrase_file)
    if environ.get(ENV_VAR):
        return Passphrase(environ[ENV_VAR], ENV_VAR)
    if settings.passphrase_file is not None:
        return read_passphrase_file(settings.passphrase_file)
    return None


def check_new_passphrase(passphrase: Passphrase) -> Passphrase:
    """``passphrase`` if it may protect a key file: at least MIN_NEW_LENGTH characters."""
    if len(passphrase.value) < MIN_NEW_LENGTH:
        raise KeyFileError(
            f"the new passphrase (from {passphrase.source}) has {len(passphrase.value)} characters; "
            f"a key file needs at least {MIN_NEW_LENGTH}"
        )
    return passphrase


def no_passphrase(key_file: Path | None) -> KeyFileError:
    """The error for a key file that must be opened or made with no passphrase to hand."""
    return KeyFileError(
        f"no passphrase for key file {key_file}: set {ENV_VAR}, pass --passphrase-file, set passphrase_file "
        "in the site's deid.toml, or run the command on a terminal to be asked"
    )
