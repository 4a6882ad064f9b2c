"""A site runs only app code its administrator approved (issue 4, point 4).

Unit tests pin the digest to Flower's own FAB hash and the gate's decisions; the federation test
starts a real SuperLink and one SuperNode (TLS, node auth, the gate on PATH as the launcher sets
it) and shows an approved app training and a one-byte-modified app refused at the site before
it could touch the site's data.
"""

import dataclasses
import hashlib
import json
import subprocess
import sys
import zipfile

import pytest
from flwr.app import Context, RecordDict
from flwr.cli.build import build
from flwr.common.config import get_project_dir
from flwr.supercore.fab import Fab
from flwr.supercore.run import Run
from typer.testing import CliRunner

from client.ledger import HEAD_FILE, LEDGER_FILE, Ledger
from common.run_record import RunRecord
from common.settings import RunSettings
from deploy.coordinator.app_bundle import stage_app
from deploy.coordinator.run_supervisor import RunSupervisor
from deploy.coordinator.superlink import SuperLink
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace, provision_demo, start_demo_site
from deploy.host.processes import ProcessSet
from deploy.site.app_approval import (
    AppApprovalError,
    approvals,
    approve_app,
    fab_digest,
    revoke,
)
from deploy.site.approved_apps import APPROVALS_FILE, REFUSALS_FILE
from deploy.site.clientapp_gate import AppRefused, check_app, gated, installed_once
from insite import cli

SETTINGS = {
    "rounds": 1,
    "min_sites": 1,
    "round_timeout_s": 240,
    "training": {"local_steps": 1, "patch_size": 16, "batch_size": 1},
    "model": {"channels": [4, 8, 16], "strides": [2, 2]},
    "aggregation": {"mode": "plain"},
}


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory):
    return stage_app(tmp_path_factory.mktemp("staged") / "app")


def _modified_copy(app_dir, target):
    """The staged app with one byte added to a site-side module."""
    modified = stage_app(target)
    training = modified / "client" / "training.py"
    training.write_bytes(training.read_bytes() + b"\n")
    return modified


# --- the digest ---------------------------------------------------------------------------------


def test_digest_is_flowers_fab_hash(app_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build(app=app_dir)  # `flwr build`: names the file after the FAB's SHA-256
    [fab] = tmp_path.glob("*.fab")
    digest = fab_digest(app_dir)
    assert digest == hashlib.sha256(fab.read_bytes()).hexdigest() == fab_digest(fab)
    assert fab.stem.endswith(digest[:8])
    assert fab_digest(app_dir) == digest  # deterministic: same files, same digest


def test_one_byte_changes_the_digest(app_dir, tmp_path):
    assert fab_digest(_modified_copy(app_dir, tmp_path / "modified")) != fab_digest(app_dir)


def _zip_without_manifest(path):
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("a.py", "")


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda path: None, "not found"),
        (lambda path: path.mkdir(), "no pyproject.toml"),
        (lambda path: path.write_text("hello"), "neither a Flower app folder nor a .fab"),
        (_zip_without_manifest, "neither a Flower app folder nor a .fab"),
    ],
)
def test_bad_app_paths_are_named(tmp_path, make, reason):
    path = tmp_path / "thing"
    make(path)
    with pytest.raises(AppApprovalError, match=reason) as error:
        fab_digest(path)
    assert str(path) in str(error.value)


# --- the gate's decision ------------------------------------------------------------------------


def test_gate_refuses_unless_approved(tmp_path):
    good, other = "a" * 64, "b" * 64
    config = {"site-name": "site-a", "cache-path": str(tmp_path)}
    with pytest.raises(AppRefused, match="no app is approved there yet.*approve-app"):
        check_app(good, good, config)
    approve_app(tmp_path, good, "reviewed")
    check_app(good, good, config)
    with pytest.raises(AppRefused, match=f"app {other} refused at site-a: not approved"):
        check_app(other, other, config)
    with pytest.raises(AppRefused, match=f"announced as {good}"):
        check_app(other, good, config)  # content that does not match its announced hash
    with pytest.raises(AppRefused, match="no cache-path"):
        check_app(good, good, {"site-name": "site-a"})
    revoke(tmp_path, good)
    with pytest.raises(AppRefused, match="not approved"):
        check_app(good, good, config)
    (tmp_path / APPROVALS_FILE).write_text("{not json")
    with pytest.raises(AppRefused, match="not a readable approval list"):
        check_app(good, good, config)


def test_an_approved_bundle_already_installed_is_not_unpacked_again(tmp_path, monkeypatch):
    """Flower unpacks and re-hashes the whole bundle for every message; once installed, the gate skips that."""
    content = b"an approved bundle"
    digest = hashlib.sha256(content).hexdigest()
    cache = tmp_path / "cache"
    approve_app(cache, digest, "reviewed")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    run = dataclasses.replace(Run.create_empty(7), fab_id="insite/insite-app", fab_version="0.1.0")
    context = Context(
        run_id=7,
        node_id=1,
        node_config={"site-name": "site-a", "cache-path": str(cache)},
        state=RecordDict(),
        run_config={},
    )
    pull = gated(lambda client: (None, context, run, Fab(digest, content, {})))  # type: ignore[arg-type, return-value]
    unpacked: list[bytes] = []

    def flower_install(fab_file, install_dir=None, skip_prompt=False):
        unpacked.append(fab_file)
        return tmp_path / "fresh install"

    install = installed_once(flower_install)
    pull(None)
    assert install(content, skip_prompt=True) == tmp_path / "fresh install" and unpacked == [content]
    installed = get_project_dir(run.fab_id, run.fab_version, digest)
    installed.mkdir(parents=True)
    pull(None)
    assert install(content, skip_prompt=True) == installed and unpacked == [content]
    assert install(b"another bundle", skip_prompt=True) == tmp_path / "fresh install" and len(unpacked) == 2


def test_a_message_object_still_on_its_way_to_the_supernode_is_asked_for_again_within_a_tenth_of_a_second(
    monkeypatch,
):
    """The SuperNode starts a task before the message's objects have all arrived; Flower's ClientApp waits 1 s."""
    import time

    import flwr.supernode.runtime.run_clientapp as runtime
    from flwr.app import ConfigRecord
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

    from common import object_pulls
    from deploy.site import clientapp_gate

    assert (clientapp_gate.FIRST_RETRY_S, clientapp_gate.RETRY_CAP_S) == (
        object_pulls.FIRST_RETRY_S,
        object_pulls.RETRY_CAP_S,
    )
    monkeypatch.setattr(runtime, "pull_and_inflate_object_from_tree", runtime.pull_and_inflate_object_from_tree)
    assert clientapp_gate.quicker_message_pull()
    message = RecordDict({"config": ConfigRecord({"server-round": 3})})  # a message's content: an object tree
    contents = {object_id: obj.deflate() for object_id, obj in get_all_nested_objects(message).items()}
    arrived: set[str] = set()

    def pull_object(object_id: str) -> bytes:
        if object_id not in arrived:  # not at the SuperNode yet; there when asked again
            arrived.add(object_id)
            raise ObjectUnavailableError(object_id)
        return contents[object_id]

    started = time.monotonic()
    pulled = runtime.pull_and_inflate_object_from_tree(get_object_tree(message), pull_object, lambda object_id: None)
    assert time.monotonic() - started < 0.5
    assert pulled.config_records["config"]["server-round"] == 3 and arrived == set(contents)


def test_gate_leaves_the_app_packages_to_the_fab():
    """The gate runs in the process that imports the shipped app: it must not import their site copies."""
    probe = (
        "import sys, deploy.site.clientapp_gate; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('common', 'client', 'server')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the administrator's commands ---------------------------------------------------------------


def test_approve_list_revoke_round_trip(app_dir, tmp_path):
    runner, cache = CliRunner(), tmp_path / "cache"
    done = runner.invoke(cli.app, ["site", "approve-app", str(app_dir), "--cache", str(cache), "--note", "release 0.1"])
    assert done.exit_code == 0, done.output
    digest = fab_digest(app_dir)
    assert digest in done.output
    again = runner.invoke(cli.app, ["site", "approve-app", str(app_dir), "--cache", str(cache)])
    assert again.exit_code == 0 and len(approvals(cache)) == 1
    listed = json.loads(runner.invoke(cli.app, ["site", "approved", "--cache", str(cache), "--json"]).output)
    assert [(a["digest"], a["note"]) for a in listed] == [(digest, "release 0.1")]
    done = runner.invoke(cli.app, ["site", "revoke-app", digest], env={"INSITE_SITE_CACHE": str(cache)})
    assert done.exit_code == 0, done.output
    assert approvals(cache) == []
    assert "no app is approved" in runner.invoke(cli.app, ["site", "approved", "--cache", str(cache)]).output


@pytest.mark.parametrize(
    "args, expected",
    [
        (["approve-app", "{tmp}/nowhere"], "nowhere: not found"),
        (["approve-app", "{tmp}/notes.txt"], "neither a Flower app folder nor a .fab"),
        (["revoke-app", "c" * 64], "is not approved at this site"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, expected):
    (tmp_path / "notes.txt").write_text("not an app")
    argv = ["insite", "site", *(a.format(tmp=tmp_path) for a in args), "--cache", str(tmp_path / "cache")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], lines


# --- on a real federation -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("approval")
    space = Workspace(root)
    write_site(DEMO_SITES[0], space.site_dir("site-a") / "data", 1, 1, size=32)
    provision_demo(space, ["site-a"])
    with ProcessSet(space.logs, {}) as processes:
        fed = SuperLink(space.root, space.consortium, processes)
        fed.start()
        site = space.site("site-a", 1)
        fed.register_key(site.context.name, site.public_key)
        start_demo_site(fed, site, space.root)  # approves this project's app, as `submit` ships it
        yield space, fed, site


def _run(fed, run_dir, app_dir=None):
    settings = RunSettings.model_validate(SETTINGS)
    RunRecord(run_dir).create("approval-test", settings, transport={"tls": True})
    return RunSupervisor(fed, run_dir, lambda row: None, lambda event: None, 400, app_dir).run()


@pytest.mark.federation
@pytest.mark.timeout(900)
def test_site_runs_the_approved_app_and_refuses_a_modified_one(federation, app_dir, tmp_path):
    space, fed, site = federation
    cache = site.context.cache_path
    modified = _modified_copy(app_dir, tmp_path / "modified-app")
    digest = fab_digest(modified)

    # The only site refuses every try of the round: the run pauses (resumable once the site approves
    # the app), saying why; it is not counted as done.
    refused = _run(fed, tmp_path / "refused-run", modified)
    assert refused["status"] == "paused" and f"app {digest} refused at site-a: not approved" in refused["paused"]
    attempts = RunSettings.model_validate(SETTINGS).faults.round_attempts
    refusals = [json.loads(line) for line in (cache / REFUSALS_FILE).read_text().splitlines()]
    assert len(refusals) == attempts and all(r["digest"] == digest and r["site"] == "site-a" for r in refusals)
    # Refused before it could read data: nothing was preprocessed; each refusal is in the ledger.
    assert sorted(p.name for p in cache.iterdir()) == sorted([REFUSALS_FILE, APPROVALS_FILE, LEDGER_FILE, HEAD_FILE])
    entries = Ledger(cache).entries()
    assert len(entries) == attempts and all(e["kind"] == "refused" and digest in e["detail"] for e in entries)

    record = _run(fed, tmp_path / "approved-run")
    assert record["status"] == "completed"
    assert [r["round"] for r in RunRecord(tmp_path / "approved-run").rounds()] == [1]
    assert (cache / "preprocessed").is_dir()
    assert len((cache / REFUSALS_FILE).read_text().splitlines()) == attempts
