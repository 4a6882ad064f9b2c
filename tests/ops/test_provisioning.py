"""The coordinator's and the site's provisioning commands, as an operator runs them."""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from deploy.coordinator.pki import ConsortiumFiles
from deploy.site.settings import load_site_settings


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_provision_keygen_register_kit_status(tmp_path, insite, consortium):
    files = ConsortiumFiles(consortium)
    for key in (files.ca_key, files.server_key):
        assert key.stat().st_mode & 0o777 == 0o600
    server = _cert(files.server_cert)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"coordinator.test", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    server.verify_directly_issued_by(_cert(files.ca_cert))

    site = tmp_path / "site-a"
    done = insite("site", "keygen", "--dir", site / "keys")
    assert done.code == 0, done.err
    private, public = site / "keys" / "node.key", site / "keys" / "node.pub"
    assert private.stat().st_mode & 0o777 == 0o600 and str(public) in " ".join(done.out.split())
    fingerprint = done.out.split("fingerprint: ")[1].split()[0]

    done = insite("coord", "register-site", "site-a", public, "--dir", consortium)
    assert done.code == 0 and fingerprint in done.out, done.err
    assert insite("coord", "register-site", "site-a", public, "--dir", consortium).code == 0  # idempotent
    listed = json.loads(insite("coord", "sites", "--json", "--dir", consortium).out)
    assert listed == [{"name": "site-a", "fingerprint": fingerprint}]

    kit = tmp_path / "kit-a"
    assert insite("coord", "kit", "site-a", "--out", kit, "--dir", consortium).code == 0
    assert sorted(p.name for p in kit.iterdir()) == ["README.md", "ca.pem", "site.toml"]
    secrets = [files.ca_key.read_bytes(), files.server_key.read_bytes(), private.read_bytes()]
    for path in kit.iterdir():
        content = path.read_bytes()
        assert b"PRIVATE KEY" not in content
        assert not any(secret.strip() in content for secret in secrets)
    assert (kit / "ca.pem").read_bytes() == files.ca_cert.read_bytes()
    settings = load_site_settings(kit / "site.toml")
    assert (settings.name, settings.superlink) == (
        "site-a",
        json.loads(insite("coord", "status", "--json", "--dir", consortium).out)["address"],
    )
    assert settings.root_certificates == kit / "ca.pem"
    assert insite("coord", "kit", "site-a", "--out", kit, "--dir", consortium).code == 2  # not over a kit

    status = json.loads(insite("coord", "status", "--json", "--dir", consortium).out)
    assert status["coordinator_certificate"]["days_left"] in (89, 90)
    assert status["ca"]["days_left"] >= 3649 and not status["superlink"]["running"]
    assert [s["name"] for s in status["sites"]] == ["site-a"]
    table = insite("coord", "status", "--dir", consortium)
    assert table.code == 0 and "registered sites: site-a" in table.out


def test_renew_changes_the_certificate_and_keeps_the_ca(insite, consortium):
    files = ConsortiumFiles(consortium)
    ca, cert, key = (p.read_bytes() for p in (files.ca_cert, files.server_cert, files.server_key))
    done = insite("coord", "renew", "--days", "30", "--dir", consortium)
    assert done.code == 0, done.err
    assert files.ca_cert.read_bytes() == ca and files.server_key.stat().st_mode & 0o777 == 0o600
    assert files.server_cert.read_bytes() != cert and files.server_key.read_bytes() != key
    _cert(files.server_cert).verify_directly_issued_by(_cert(files.ca_cert))
    status = json.loads(insite("coord", "status", "--json", "--dir", consortium).out)
    assert status["coordinator_certificate"]["days_left"] in (29, 30)
    assert status["coordinator_certificate"]["renew"]  # within renew_before_days (30)


def test_provision_keeps_an_existing_ca_unless_forced(insite, consortium, consortium_config):
    config = consortium_config("again.toml")
    ca = ConsortiumFiles(consortium).ca_cert.read_bytes()
    insite("coord", "provision", "--config", config, "--dir", consortium).one_line_error(
        "a consortium CA exists already", "--force"
    )
    assert ConsortiumFiles(consortium).ca_cert.read_bytes() == ca
    assert insite("coord", "provision", "--config", config, "--dir", consortium, "--force").code == 0
    assert ConsortiumFiles(consortium).ca_cert.read_bytes() != ca


def _openssh_public(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def test_register_site_refuses_what_is_not_a_node_key(tmp_path, insite, consortium):
    cases = {
        "rsa.pub": _openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ed25519.pub": _openssh_public(ed25519.Ed25519PrivateKey.generate()),
        "private.key": ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    }
    expected = {
        "rsa.pub": "not an ECDSA key",
        "ed25519.pub": "not an ECDSA key",
        "private.key": "not an OpenSSH public key",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        insite("coord", "register-site", "site-x", tmp_path / name, "--dir", consortium).one_line_error(
            str(tmp_path / name), expected[name]
        )
    insite("coord", "register-site", "site-x", tmp_path / "absent.pub", "--dir", consortium).one_line_error(
        str(tmp_path / "absent.pub"), "not found"
    )
    insite("coord", "register-site", "../evil", tmp_path / "rsa.pub", "--dir", consortium).one_line_error(
        "site name '../evil'"
    )
    for site in ("a", "b"):
        assert insite("site", "keygen", "--dir", tmp_path / site).code == 0
    assert insite("coord", "register-site", "site-a", tmp_path / "a" / "node.pub", "--dir", consortium).code == 0
    insite("coord", "register-site", "site-a", tmp_path / "b" / "node.pub", "--dir", consortium).one_line_error(
        "site site-a is registered with another key"
    )
    insite("coord", "register-site", "site-b", tmp_path / "a" / "node.pub", "--dir", consortium).one_line_error(
        "already registered as site site-a"
    )
    insite("site", "keygen", "--dir", tmp_path / "a").one_line_error("refusing to overwrite")
