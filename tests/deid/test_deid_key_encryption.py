"""The pseudonymisation key is encrypted at rest (AES-256-GCM under a key derived from the site's
passphrase by scrypt), names its site in an authenticated header, and is looked after through the
real CLI: `site init`, `site deid`, `site key encrypt | rotate-passphrase | backup`, `site
reidentify`. Real files, real crypto; the passphrase comes from INSITE_DEID_PASSPHRASE (conftest)
unless a test says otherwise. A refused key file is left byte for byte as it was."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pydicom import dcmread

from insite.cli import passphrase as cli_passphrase
from siteprep.deid.keyfile import Passphrase, unseal
from siteprep.deid.keys import SiteKey
from siteprep.deid.passphrase import ENV_VAR
from siteprep.deid.settings import load_deid_settings

SITE = "site-a"


def _init(insite, folder: Path, site: str = SITE) -> Path:
    made = insite("site", "init", "--site", site, "--dir", folder)
    assert made.code == 0, made.err
    return folder / "deid.toml"


@pytest.fixture
def config(insite, tmp_path) -> Path:
    """Site A's settings and its new encrypted key, as 'insite site init' makes them."""
    return _init(insite, tmp_path / SITE)


def _key(config: Path) -> Path:
    return config.parent / "deid-key.enc"


def _deid(insite, source: Path, out: Path, *options: str | Path):
    return insite("site", "deid", source, out, "--json", *options)


def _subjects(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def _secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_the_key_file_holds_no_pseudonym_or_patient(insite, config, planted_tree, tmp_path):
    source, patients = planted_tree
    ran = _deid(insite, source, tmp_path / "out", "--config", config)
    assert ran.code == 0, ran.err
    subjects = _subjects(tmp_path / "out")
    assert len(subjects) == len(patients) == 2

    key = _key(config)
    held = key.read_bytes()
    planted = {v for p in patients for v in (p.patient_id, p.name, p.birth_date, p.other_id, p.study_uid)}
    for value in [*subjects, *planted, *(v.split("^")[0] for v in planted), "PatientID", "date_offset_days"]:
        assert value.encode() not in held, value
    header = json.loads(held.split(b"\n", 1)[0])
    assert header["site"] == SITE and header["cipher"] == "AES-256-GCM" and header["kdf"]["name"] == "scrypt"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # nothing else beside it: no temporary file, no plaintext copy
    assert sorted(p.name for p in key.parent.iterdir()) == ["deid-key.enc", "deid-key.enc.lock", "deid.toml"]


def test_deid_round_trip_with_the_environment_variable(insite, config, planted_tree, tmp_path):
    """A second run opens the key with the passphrase from the environment: same pseudonyms."""
    source, _ = planted_tree
    assert _deid(insite, source, tmp_path / "one", "--config", config).code == 0
    again = _deid(insite, source, tmp_path / "two", "--config", config)
    assert again.code == 0, again.err
    assert _subjects(tmp_path / "one") == _subjects(tmp_path / "two")
    scanned = insite("site", "scan", tmp_path / "two", "--original", source, "--config", config, "--json")
    assert scanned.code == 0 and json.loads(scanned.out)["files_with_residuals"] == 0


def _flip_a_ciphertext_byte(data: bytes) -> bytes:
    at = data.index(b"\n") + 20
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_flip_a_ciphertext_byte, ("corrupted key file", "authentication failed")),
        (lambda data: data[:-7], ("corrupted key file", "authentication failed")),
        (lambda data: data[:40], ("corrupted key file", "no header line")),
        (lambda data: b"", ("corrupted key file", "empty")),
    ],
    ids=["flipped-byte", "truncated", "truncated-header", "emptied"],
)
def test_a_damaged_key_file_is_named_and_left_alone(insite, config, planted_tree, tmp_path, damage, expected):
    source, _ = planted_tree
    key = _key(config)
    damaged = damage(key.read_bytes())
    key.write_bytes(damaged)
    refused = _deid(insite, source, tmp_path / "out", "--config", config)
    refused.one_line_error(*expected, str(key))
    assert key.read_bytes() == damaged and not (tmp_path / "out").exists()


def test_a_wrong_passphrase_is_named_and_changes_nothing(insite, config, planted_tree, tmp_path, monkeypatch):
    source, _ = planted_tree
    key = _key(config)
    before = key.read_bytes()
    monkeypatch.setenv(ENV_VAR, "not the passphrase at all")
    refused = _deid(insite, source, tmp_path / "out", "--config", config)
    refused.one_line_error("wrong passphrase", str(key), ENV_VAR)
    insite("site", "reidentify", "SUBJ-AAAAAAAA", "--config", config).one_line_error("wrong passphrase")
    insite("site", "key", "backup", tmp_path / "copy", "--config", config).one_line_error("wrong passphrase")
    assert key.read_bytes() == before and not (tmp_path / "out").exists() and not (tmp_path / "copy").exists()
    assert not list(config.parent.glob("*.log"))  # no look-up happened, none is logged


def test_a_key_file_of_another_site_is_named(insite, config, planted_tree, tmp_path):
    source, _ = planted_tree
    other = _key(_init(insite, tmp_path / "site-b", site="site-b"))
    key = _key(config)
    key.write_bytes(other.read_bytes())
    refused = _deid(insite, source, tmp_path / "out", "--config", config)
    refused.one_line_error("key file of another site", "site 'site-b'", str(key))
    assert key.read_bytes() == other.read_bytes() and not (tmp_path / "out").exists()


def test_the_header_is_authenticated(insite, config, planted_tree, tmp_path):
    """Renaming the site in the header does not make a key another site's: the tag fails."""
    source, _ = planted_tree
    key = _key(config)
    altered = key.read_bytes().replace(b'"site":"site-a"', b'"site":"site-x"', 1)
    key.write_bytes(altered)
    # the shipped profile names no site, so the header's is taken as it stands, and fails to authenticate
    refused = _deid(insite, source, tmp_path / "out", "--key-file", key)
    refused.one_line_error("corrupted key file", "authentication failed")
    _deid(insite, source, tmp_path / "out", "--config", config).one_line_error("key file of another site")
    assert key.read_bytes() == altered


def _write_plaintext_key(key: Path, passphrase: str) -> bytes:
    """The key's document as an older insite kept it: plaintext JSON, 0600."""
    _, document = unseal(key, key.read_bytes(), Passphrase(passphrase, "the test"), SITE)
    plaintext = json.dumps(json.loads(document), indent=1, sort_keys=True).encode()
    key.write_bytes(plaintext)
    return plaintext


def test_encrypt_migrates_a_plaintext_key_and_leaves_no_plaintext(insite, config, planted_tree, tmp_path, passphrase):
    source, _ = planted_tree
    assert _deid(insite, source, tmp_path / "one", "--config", config).code == 0
    key = _key(config)
    plaintext = _write_plaintext_key(key, passphrase)
    subjects = _subjects(tmp_path / "one")
    assert subjects[0].encode() in plaintext
    copy = tmp_path / "hard-link-to-the-plaintext"
    os.link(key, copy)

    refused = _deid(insite, source, tmp_path / "two", "--config", config)
    refused.one_line_error("plaintext key file", "insite site key encrypt")
    assert key.read_bytes() == plaintext and not (tmp_path / "two").exists()

    done = insite("site", "key", "encrypt", "--config", config)
    assert done.code == 0, done.err
    held = key.read_bytes()
    assert all(s.encode() not in held for s in subjects) and held.startswith(b'{"check":')
    assert copy.read_bytes() == b""  # the plaintext's own blocks were overwritten, hard links included
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in key.parent.iterdir()) == ["deid-key.enc", "deid-key.enc.lock", "deid.toml"]

    again = _deid(insite, source, tmp_path / "two", "--config", config)
    assert again.code == 0 and _subjects(tmp_path / "two") == subjects  # the same key, now encrypted
    insite("site", "key", "encrypt", "--config", config).one_line_error("encrypted already")


def test_encrypt_needs_the_site_name(insite, planted_tree, tmp_path, passphrase, config):
    key = _key(config)
    plaintext = _write_plaintext_key(key, passphrase)
    insite("site", "key", "encrypt", "--key-file", key).one_line_error("--site NAME")
    assert key.read_bytes() == plaintext
    done = insite("site", "key", "encrypt", "--key-file", key, "--site", SITE)
    assert done.code == 0 and 'site = "site-a"' in done.out


def test_rotate_passphrase(insite, config, planted_tree, tmp_path, monkeypatch):
    source, _ = planted_tree
    assert _deid(insite, source, tmp_path / "one", "--config", config).code == 0
    key = _key(config)
    before = key.read_bytes()
    short = _secret_file(tmp_path / "short", "too short")
    rotate = ("site", "key", "rotate-passphrase", "--config", config, "--new-passphrase-file")
    insite(*rotate, short).one_line_error("at least 12")
    assert key.read_bytes() == before

    new = _secret_file(tmp_path / "new-passphrase", "a brand new passphrase for site a")
    done = insite(*rotate, new)
    assert done.code == 0, done.err
    assert f"{ENV_VAR} still gives the old passphrase" in done.out
    _deid(insite, source, tmp_path / "two", "--config", config).one_line_error("wrong passphrase")
    monkeypatch.setenv(ENV_VAR, "a brand new passphrase for site a")
    again = _deid(insite, source, tmp_path / "two", "--config", config)
    assert again.code == 0 and _subjects(tmp_path / "two") == _subjects(tmp_path / "one")


def test_backup_is_encrypted_and_opens_with_the_passphrase(insite, config, planted_tree, tmp_path, passphrase):
    source, _ = planted_tree
    assert _deid(insite, source, tmp_path / "out", "--config", config).code == 0
    backup = tmp_path / "removable" / "deid-key.backup"
    done = insite("site", "key", "backup", backup, "--config", config)
    assert done.code == 0, done.err
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert all(s.encode() not in backup.read_bytes() for s in _subjects(tmp_path / "out"))
    restored = SiteKey(backup, "SUBJ", persist=False, passphrase=Passphrase(passphrase, "the test"), site=SITE)
    assert sorted(restored.patients()) == _subjects(tmp_path / "out")
    insite("site", "key", "backup", backup, "--config", config).one_line_error("exists already")


def test_reidentify_finds_the_patient_and_logs_the_lookup(insite, config, planted_tree, tmp_path):
    source, patients = planted_tree
    assert _deid(insite, source, tmp_path / "out", "--config", config).code == 0
    found = {}
    for subject in _subjects(tmp_path / "out"):
        shown = insite("site", "reidentify", subject, "--config", config, "--reason", "REQ-17", "--json")
        assert shown.code == 0, shown.err
        found[subject] = json.loads(shown.out)["original"]["PatientID"]
    assert sorted(found.values()) == sorted(p.patient_id for p in patients)

    subject = next(iter(found))
    shown = insite("site", "reidentify", subject, "--config", config)
    assert found[subject] in shown.out and "look-up logged" in shown.out
    insite("site", "reidentify", "SUBJ-NOBODY00", "--config", config).one_line_error("no patient has the pseudonym")

    log = config.parent / "deid-key.enc.lookups.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["pseudonym"] for r in records] == [*found, subject, "SUBJ-NOBODY00"]
    assert [r["found"] for r in records] == [True, True, True, False]
    assert all(r["user"] and r["time"] and r["host"] for r in records) and records[0]["reason"] == "REQ-17"
    text = log.read_text()
    for patient in patients:  # who was looked up is not in the log, only which pseudonym
        assert patient.patient_id not in text and patient.name not in text


def test_workers_agree_on_patients_with_an_encrypted_key(insite, config, planted_tree, tmp_path, key_patients):
    """The pool's workers get the key in memory (a loan); each patient still gets one pseudonym."""
    source, patients = planted_tree
    config.write_text(config.read_text().replace("# workers = 2 ", "workers = 2   ", 1))
    settings = load_deid_settings(config)
    assert settings.workers == 2
    ran = _deid(insite, source, tmp_path / "out", "--config", config)
    assert ran.code == 0, ran.err
    files_per_id = {}
    for subject in _subjects(tmp_path / "out"):
        ids = {str(dcmread(p, stop_before_pixels=True).PatientID) for p in (tmp_path / "out" / subject).rglob("*.dcm")}
        assert ids == {subject}
        original = json.loads(insite("site", "reidentify", subject, "--config", config, "--json").out)["original"]
        files_per_id[original["PatientID"]] = len(list((tmp_path / "out" / subject).rglob("*.dcm")))
    assert sorted(key_patients(settings)) == _subjects(tmp_path / "out")
    # the planted tree: the first patient has two series, the second one (4 slices each)
    assert files_per_id == {patients[0].patient_id: 8, patients[1].patient_id: 4}
    assert sorted(p.name for p in config.parent.iterdir()) == [
        "deid-key.enc",
        "deid-key.enc.lock",
        "deid-key.enc.lookups.log",
        "deid.toml",
    ]


def test_passphrase_sources(insite, config, planted_tree, tmp_path, monkeypatch, passphrase):
    source, _ = planted_tree
    monkeypatch.delenv(ENV_VAR)
    _deid(insite, source, tmp_path / "out", "--config", config).one_line_error("no passphrase", ENV_VAR)

    (tmp_path / "safe").mkdir()
    in_file = _secret_file(tmp_path / "safe" / "passphrase", passphrase)
    monkeypatch.setenv(ENV_VAR, "a wrong passphrase, overridden")
    ran = _deid(insite, source, tmp_path / "one", "--config", config, "--passphrase-file", in_file)
    assert ran.code == 0, ran.err  # the command line's file comes before the environment

    monkeypatch.delenv(ENV_VAR)
    config.write_text(config.read_text().replace("# passphrase_file = ", f'passphrase_file = "{in_file}" #', 1))
    assert load_deid_settings(config).passphrase_file == in_file
    assert _deid(insite, source, tmp_path / "two", "--config", config).code == 0  # deid.toml's file

    in_file.chmod(0o644)
    _deid(insite, source, tmp_path / "three", "--config", config).one_line_error("readable by others", str(in_file))


def test_init_asks_twice_on_a_terminal(insite, planted_tree, tmp_path, monkeypatch):
    source, _ = planted_tree
    monkeypatch.delenv(ENV_VAR)
    insite("site", "init", "--site", SITE, "--dir", tmp_path / "x").one_line_error("no passphrase")
    answers: list[str] = []
    monkeypatch.setattr(cli_passphrase, "on_terminal", lambda: True)
    monkeypatch.setattr(cli_passphrase, "ask", lambda prompt: answers.pop(0))

    answers[:] = ["one long passphrase", "one long passphrase, mistyped"]
    insite("site", "init", "--site", SITE, "--dir", tmp_path / "x").one_line_error("differ")
    answers[:] = ["short"]
    insite("site", "init", "--site", SITE, "--dir", tmp_path / "x").one_line_error("at least 12")
    assert not (tmp_path / "x").exists()

    answers[:] = ["one long passphrase"] * 2
    config = _init(insite, tmp_path / "x")
    answers[:] = ["one long passphrase"]
    ran = _deid(insite, source, tmp_path / "out", "--config", config)
    assert ran.code == 0 and not answers, ran.err
