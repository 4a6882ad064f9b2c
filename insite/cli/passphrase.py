"""The key file's passphrase at the command line: from a file, the environment, or typed.

Sources in order: ``--passphrase-file``, ``INSITE_DEID_PASSPHRASE``, ``passphrase_file`` of the
site's ``deid.toml`` (:mod:`siteprep.deid.passphrase`), and only then a hidden prompt, when the
command runs on a terminal. A new passphrase typed at the prompt is asked twice: a typo in it
would lock the site out of its own key. A key file that cannot be used anyway (plaintext, of
another site, damaged) is named before anything is asked.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import typer

from siteprep.deid.errors import KeyFileError
from siteprep.deid.keyfile import Passphrase, read_header, read_key_file
from siteprep.deid.keys import refuse_shared_key_file, site_for_new_key
from siteprep.deid.passphrase import (
    ENV_VAR,
    MIN_NEW_LENGTH,
    check_new_passphrase,
    configured_passphrase,
    no_passphrase,
    read_passphrase_file,
)
from siteprep.deid.settings import DeidSettings

PassphraseFileOption = typer.Option(
    None,
    "--passphrase-file",
    help=f"a file (0600) holding the key file's passphrase, for scripts and services; else {ENV_VAR}, "
    "else passphrase_file of --config, else a prompt on the terminal. The key file is encrypted: "
    "its passphrase, kept apart from it, is what stops a copy of the file from re-identifying patients",
)

TERMINAL = "the terminal"


def on_terminal() -> bool:
    """Whether someone can be asked: the command's input is a terminal."""
    return sys.stdin.isatty()


def ask(prompt: str) -> str:
    """One hidden line typed at the terminal."""
    return getpass.getpass(prompt)


def current_passphrase(settings: DeidSettings, passphrase_file: Path | None) -> Passphrase:
    """The passphrase of the existing key file ``settings`` name, checked for use first."""
    key_file = settings.key_file
    assert key_file is not None  # site_deid_settings names one or refuses
    refuse_shared_key_file(key_file)
    header, _, _ = read_header(key_file, read_key_file(key_file), settings.site)
    found = configured_passphrase(settings, passphrase_file)
    if found is not None:
        return found
    if not on_terminal():
        raise no_passphrase(key_file)
    return Passphrase(ask(f"passphrase of key file {key_file} (site {header.site}): "), TERMINAL)


def new_passphrase(
    what: str, found: Passphrase | None, sources: str = f"set {ENV_VAR}, pass --passphrase-file"
) -> Passphrase:
    """A new passphrase for ``what``: ``found`` (from a file or the environment), else typed twice."""
    if found is not None:
        return check_new_passphrase(found)
    if not on_terminal():
        raise KeyFileError(f"no passphrase for {what}: {sources}, or run the command on a terminal")
    first = check_new_passphrase(
        Passphrase(ask(f"new passphrase for {what} (at least {MIN_NEW_LENGTH} characters): "), TERMINAL)
    )
    if ask("the same passphrase again: ") != first.value:
        raise KeyFileError("the two passphrases typed differ; nothing was written")
    return first


def run_passphrase(settings: DeidSettings, passphrase_file: Path | None, dry_run: bool) -> Passphrase | None:
    """What a de-identification run needs: the key's passphrase, or a new one for a new key.

    None for a dry run without a key file: its key lives in memory only.
    """
    key_file = settings.key_file
    assert key_file is not None  # site_deid_settings names one or refuses
    if key_file.exists():
        return current_passphrase(settings, passphrase_file)
    if dry_run:
        return None
    site = site_for_new_key(key_file, settings.site)
    return new_passphrase(f"site {site}'s new key file {key_file}", configured_passphrase(settings, passphrase_file))


def replacement_passphrase(key_file: Path, new_passphrase_file: Path | None) -> Passphrase:
    """The passphrase that replaces the current one: from ``--new-passphrase-file``, else typed twice."""
    found = read_passphrase_file(new_passphrase_file) if new_passphrase_file else None
    return new_passphrase(f"key file {key_file}", found, "pass --new-passphrase-file")
