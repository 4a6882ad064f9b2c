"""``insite site key encrypt | rotate-passphrase | backup`` and ``insite site reidentify``.

The site's pseudonymisation key maps every pseudonym back to a patient, so it is encrypted under a
passphrase the site keeps apart from it (seed 003: the key encrypted, its encryption key "locked in
safes"). Argument handling and presentation only; the work is in :mod:`siteprep.deid.key_admin`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from common.errors import ConfigError
from insite.cli.passphrase import (
    TERMINAL,
    PassphraseFileOption,
    current_passphrase,
    new_passphrase,
    replacement_passphrase,
)
from insite.cli.site_data import ConfigOption, JsonOption, KeyFileOption
from insite.cli.terminal import command_group, say
from siteprep.deid import key_admin
from siteprep.deid.passphrase import configured_passphrase
from siteprep.deid.settings import DeidSettings, check_site_name, site_deid_settings

app = command_group(
    help="The site's pseudonymisation key: encrypt one an older insite left in plaintext, change its "
    "passphrase, back it up. It maps every pseudonym back to a patient, so it is kept encrypted."
)


def _say(text: str) -> None:
    say(escape(text))  # paths, names and the [deid] table are text, not rich markup


def _key_file(settings: DeidSettings) -> Path:
    assert settings.key_file is not None  # site_deid_settings names one or refuses
    return settings.key_file


@app.command()
def encrypt(
    config: Path = ConfigOption,
    key_file: Path = KeyFileOption,
    site: str = typer.Option(
        None, "--site", help="this site's name, written into the key's authenticated header; default: site of --config"
    ),
    passphrase_file: Path = PassphraseFileOption,
) -> None:
    """Encrypt a plaintext key file in place: an older insite wrote every pseudonym in the clear.

    The encrypted file replaces the plaintext in one step and the old bytes are overwritten, so
    no plaintext copy is left in that file; delete older copies (backups, snapshots) yourself.
    """
    settings = site_deid_settings(config, key_file)
    path = _key_file(settings)
    if site and settings.site and site != settings.site:
        raise ConfigError(f"--site {site} differs from site '{settings.site}' of {config}")
    named = site or settings.site
    if named is None:
        raise ConfigError(
            f"name the site the key file {path} belongs to: --site NAME (as the coordinator registered it)"
        )
    check_site_name(named)
    key_admin.check_plaintext_key(path)
    passphrase = new_passphrase(f"key file {path}", configured_passphrase(settings, passphrase_file))
    summary = key_admin.encrypt_plaintext_key(path, named, passphrase)
    _say(
        f"encrypted key file {path} of site {summary.site} ({summary.patients} patients, AES-256-GCM, "
        f"passphrase via scrypt, passphrase from {passphrase.source}); no plaintext is left in it. "
        "Delete older copies of the plaintext key (backups, snapshots)."
    )
    if settings.site is None:
        _say(
            f'Add  site = "{summary.site}"  to the [deid] table of the site\'s deid.toml: '
            "then a key file of another site is refused by name."
        )


@app.command("rotate-passphrase")
def rotate(
    config: Path = ConfigOption,
    key_file: Path = KeyFileOption,
    passphrase_file: Path = PassphraseFileOption,
    new_passphrase_file: Path = typer.Option(
        None,
        "--new-passphrase-file",
        help="a file (0600) holding the new passphrase; default: asked twice on the terminal",
    ),
) -> None:
    """Re-encrypt the key file under a new passphrase, e.g. when someone who knew it leaves.

    The current passphrase must open the file first. Backups made before keep the old passphrase.
    """
    settings = site_deid_settings(config, key_file)
    path = _key_file(settings)
    current = current_passphrase(settings, passphrase_file)
    summary = key_admin.rotate_passphrase(
        path, settings.site, current, lambda: replacement_passphrase(path, new_passphrase_file)
    )
    _say(f"key file {path} of site {summary.site} ({summary.patients} patients) is now under the new passphrase")
    if current.source != TERMINAL:
        _say(f"{current.source} still gives the old passphrase: replace it")


@app.command()
def backup(
    destination: Path = typer.Argument(..., help="the backup file to write (new; 0600), e.g. on removable media"),
    config: Path = ConfigOption,
    key_file: Path = KeyFileOption,
    passphrase_file: Path = PassphraseFileOption,
) -> None:
    """Copy the key file, still encrypted under its passphrase, to DESTINATION.

    Without the key the next run gives new pseudonyms and UIDs. The passphrase is asked so that
    only a key that opens is backed up; the copy opens with the same passphrase.
    """
    settings = site_deid_settings(config, key_file)
    path = _key_file(settings)
    summary = key_admin.backup_key(path, settings.site, current_passphrase(settings, passphrase_file), destination)
    _say(
        f"backed up key file {path} of site {summary.site} ({summary.patients} patients) to {destination}, "
        "encrypted under the same passphrase; keep it apart from the passphrase"
    )


def reidentify(
    pseudonym: str = typer.Argument(..., help="the subject code, e.g. SUBJ-7M7D7WKZ"),
    config: Path = ConfigOption,
    key_file: Path = KeyFileOption,
    passphrase_file: Path = PassphraseFileOption,
    reason: str = typer.Option("", "--reason", help="why, e.g. the request's reference; logged with the look-up"),
    as_json: bool = JsonOption,
) -> None:
    """The honest broker's look-up: the patient behind PSEUDONYM.

    Needs the key's passphrase. Every look-up is logged first, to an append-only file beside the
    key (who, when, which pseudonym, the reason; never the patient), found or not.
    """
    settings = site_deid_settings(config, key_file)
    path = _key_file(settings)
    original = key_admin.reidentify(
        path, settings.site, current_passphrase(settings, passphrase_file), pseudonym, reason
    )
    shown = {keyword: value for keyword, value in original.items() if value}
    if as_json:
        print(json.dumps({"pseudonym": pseudonym, "original": shown}, indent=1))
        return
    _say(f"{pseudonym}:")
    for keyword, value in shown.items():
        _say(f"  {keyword}: {value}")
    _say(f"(look-up logged in {key_admin.lookup_log(path)})")


def register(site: typer.Typer) -> None:
    """Add ``key ...`` and ``reidentify`` to ``insite site``."""
    site.add_typer(app, name="key", help=app.info.help)
    site.command()(reidentify)
