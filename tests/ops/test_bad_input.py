"""Operator mistakes give one line naming the file, key or port, exit code 2, and no traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from deploy.coordinator.pki import ConsortiumFiles


@contextmanager
def held_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_unknown_setting_is_named_in_every_config(
    tmp_path, insite, consortium_config, consortium, site_folder, edit_setting
):
    bad = consortium_config("bad.toml", extra="renew_befor_days = 3\n")
    insite("coord", "provision", "--config", bad, "--dir", tmp_path / "new").one_line_error(
        str(bad), "unknown setting 'renew_befor_days'"
    )
    bad.write_text('[consortium]\naddress = "coordinator.example.org"\n')
    insite("coord", "provision", "--config", bad, "--dir", tmp_path / "new").one_line_error(
        str(bad), "'address': Value error, 'coordinator.example.org' is not host:port"
    )
    run = tmp_path / "federation.toml"
    run.write_text("[run]\nrounds = 2\n[run.training]\nlocal_step = 5\n")
    insite("coord", "run", "--config", run, "--dir", consortium).one_line_error(
        str(run), "unknown setting 'training.local_step'"
    )
    site = site_folder("site-a")
    with open(site / "site.toml", "a") as settings:
        settings.write("gpu = true\n")
    insite("site", "join", "--config", site / "site.toml").one_line_error(
        str(site / "site.toml"), "unknown setting 'gpu'"
    )


def test_launch_names_a_missing_certificate_a_taken_port_and_a_missing_consortium(
    tmp_path, insite, consortium, consortium_config
):
    with held_port() as port:
        provisioned = tmp_path / "taken"
        config = consortium_config("taken.toml", port=port)
        assert insite("coord", "provision", "--config", config, "--dir", provisioned).code == 0
        insite("coord", "launch", "--dir", provisioned).one_line_error(f"port {port} on 127.0.0.1 is already in use")
    ConsortiumFiles(consortium).server_cert.unlink()
    insite("coord", "launch", "--dir", consortium).one_line_error(
        str(ConsortiumFiles(consortium).server_cert), "SuperLink certificate not found"
    )
    insite("coord", "launch", "--dir", tmp_path / "nowhere").one_line_error(
        "consortium.toml: not found", "insite coord provision"
    )


def test_join_names_missing_key_missing_ca_empty_data_and_taken_port(insite, site_folder, edit_setting):
    site = site_folder("site-a")
    config = site / "site.toml"
    with held_port() as port:
        edit_setting(config, "node_port", str(port))
        insite("site", "join", "--config", config).one_line_error(f"port {port} on 127.0.0.1 is already in use")
    for case in (site / "data").rglob("*.nii.gz"):
        case.unlink()
    (site / "data" / "cases.json").unlink()
    insite("site", "join", "--config", config).one_line_error(str(site / "data"), "holds no cases")
    (site / "keys" / "node.key").unlink()
    insite("site", "join", "--config", config).one_line_error(str(site / "keys" / "node.key"), "not found")
    (site / "ca.pem").unlink()
    insite("site", "join", "--config", config).one_line_error(str(site / "ca.pem"), "CA certificate")


def test_run_and_resume_need_a_launched_superlink_and_a_run(tmp_path, insite, consortium):
    insite("coord", "run", "--dir", consortium).one_line_error("no SuperLink is running", "insite coord launch")
    insite("coord", "resume", tmp_path / "no-run", "--dir", consortium).one_line_error("run.json: not found")
    insite("demo", "--resume", "--workspace", tmp_path / "no-demo").one_line_error("run.json: not found")
