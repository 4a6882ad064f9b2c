"""Unit tests for the federation foundation: config, model, weights, checkpoints, data cache."""

from pathlib import Path

import pytest
import torch

import client.data
from client.data import SiteDataset
from common.errors import CheckpointError, ConfigError, FederationError, SiteDataError
from common.model import build_model
from common.run_record import (
    RunRecord,
    latest_checkpoint,
    load_checkpoint,
    resume_point,
    save_checkpoint,
)
from common.settings import (
    RunSettings,
    from_run_config,
    load_run_settings,
    to_run_config,
)
from common.weights import check_compatible, weights_digest
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from server.app import starting_point

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"model": {"channels": [4, 8, 16], "strides": [2, 2]}, "rounds": 3}


def test_shipped_config_is_valid():
    settings = load_run_settings(ROOT / "configs" / "federation.toml")
    assert settings.rounds >= 1


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text("[run]\nrounds = 2\nlocal_step = 5\n")
    with pytest.raises(ConfigError, match="unknown setting 'local_step'"):
        load_run_settings(path)


def test_strides_must_match_channels():
    with pytest.raises(Exception, match="strides"):
        RunSettings.model_validate({"model": {"channels": [4, 8, 16], "strides": [2]}})


def test_run_config_round_trip(tmp_path):
    settings = RunSettings.model_validate(SMALL)
    config = to_run_config(settings, tmp_path, 2)
    assert from_run_config(config) == settings
    assert config["round-offset"] == 2


def test_model_shapes_and_weight_check():
    settings = RunSettings.model_validate(SMALL)
    model = build_model(settings.model)
    out = model(torch.zeros(1, 1, 16, 16, 16))
    assert out.shape == (1, 2, 16, 16, 16)
    state = model.state_dict()
    broken = dict(state)
    name = next(iter(broken))
    broken[name] = torch.zeros(3)
    with pytest.raises(FederationError, match=name):
        check_compatible(state, broken, "site x")
    assert weights_digest(state) == weights_digest({k: v.clone() for k, v in state.items()})


def test_checkpoint_and_resume_bookkeeping(tmp_path):
    settings = RunSettings.model_validate(SMALL)
    record = RunRecord(tmp_path)
    record.create("t", settings, transport={"tls": True})
    weights = build_model(settings.model).state_dict()
    for n in (1, 2):
        save_checkpoint(tmp_path, n, weights, {"round": n}, settings)
        record.append_round({"round": n, "global_dice": 0.1 * n, "sites": {"site-a": {}}})
    assert latest_checkpoint(tmp_path).name == "round-0002.pt"
    assert load_checkpoint(latest_checkpoint(tmp_path)).settings_digest == settings.digest()
    assert record.read()["rounds_done"] == 2 and record.read()["sites"] == ["site-a"]
    with pytest.raises(CheckpointError, match="with checkpoints exists"):
        record.create("t", settings, transport={})
    (tmp_path / "checkpoints" / "round-0002.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="round-0002.pt"):
        load_checkpoint(tmp_path / "checkpoints" / "round-0002.pt")


def test_resume_scores_a_checkpoint_that_was_never_scored(tmp_path):
    """A round's Dice arrives with the next round's replies: a stop in between loses nothing."""
    settings = RunSettings.model_validate(SMALL)
    record = RunRecord(tmp_path)
    record.create("t", settings, transport={})
    weights = build_model(settings.model).state_dict()
    for n in (1, 2, 3):
        save_checkpoint(tmp_path, n, weights, {"round": n, "sites": {}, "failures": {}}, settings)
    record.append_round({"round": 1, "global_dice": 0.2, "sites": {"site-a": {}}})
    record.append_round({"round": 2, "global_dice": 0.3, "sites": {"site-a": {}}})
    _, done, checkpoint = resume_point(tmp_path)  # all rounds trained, the last one unscored
    assert done == 3
    arrays, pending = starting_point(settings, str(checkpoint), record)
    assert pending is not None and pending["round"] == 3
    assert set(arrays.to_torch_state_dict()) == set(weights)
    assert starting_point(settings, str(tmp_path / "checkpoints" / "round-0002.pt"), record)[1] is None
    record.append_round({"round": 3, "global_dice": 0.4, "sites": {"site-a": {}}})
    with pytest.raises(CheckpointError, match="nothing to resume"):
        resume_point(tmp_path)
    other = settings.model_copy(update={"seed": 7})
    with pytest.raises(CheckpointError, match="different run settings"):
        starting_point(other, str(checkpoint), record)


def test_site_data_cache_and_errors(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_site(DEMO_SITES[0], data, train_cases=2, val_cases=1, size=16)
    site = SiteDataset("site-a", data, tmp_path / "cache", 8)
    site.warm_cache()
    cached = list((tmp_path / "cache" / "preprocessed").glob("*.pt"))
    assert len(cached) == 3
    item = site.val_dataset()[0]
    assert tuple(item["image"].shape) == (1, 16, 16, 16)
    with pytest.raises(SiteDataError, match="site-x.*does not exist"):
        SiteDataset("site-x", tmp_path / "missing", tmp_path / "c2", 8)
    # A case unchanged since its volumes last opened well is not opened again; a changed one is.
    opened = []
    real_check = client.data.check_readable
    monkeypatch.setattr(client.data, "check_readable", lambda site, case: opened.append(case) or real_check(site, case))
    SiteDataset("site-a", data, tmp_path / "cache", 8)
    assert opened == []
    (data / "images" / "site-a-000.nii.gz").write_bytes(b"not a volume")
    for cache in ("cache", "c3"):
        with pytest.raises(SiteDataError, match="site-a-000.nii.gz"):
            SiteDataset("site-a", data, tmp_path / cache, 8)
    assert [case.image.name for case in opened[:1]] == ["site-a-000.nii.gz"]


def test_supernode_launcher_paces_the_idle_poll_and_caps_the_local_waits_of_flowers_loop():
    import inspect
    import time
    import types

    import flwr.supernode.start_client_internal as supernode_loop

    from deploy.site.supernode_launcher import shorten_polls

    # The launcher's premise: this Flower's SuperNode loop sleeps through its module's `time`, 3 s
    # when idle and 0.5 s while it waits for a reply in its own state.
    source = inspect.getsource(supernode_loop)
    assert supernode_loop.time is time and "time.sleep(3)" in source and "time.sleep(0.5)" in source
    loop = types.ModuleType("loop")
    loop.time = time

    def idle_wait() -> float:
        started = time.monotonic()
        loop.time.sleep(3)
        return time.monotonic() - started

    assert shorten_polls(loop, 0.3, 0.01)
    assert idle_wait() < 0.1  # no poll before this one: nothing to wait out
    assert 0.25 <= idle_wait() < 1.0  # a pull answered at once: the rest of the interval
    time.sleep(0.3)  # a pull the SuperLink held for news this long
    assert idle_wait() < 0.1
    started = time.monotonic()
    for _ in range(10):
        loop.time.sleep(0.5)
    assert time.monotonic() - started < 1.0 and loop.time.monotonic is time.monotonic
    assert not shorten_polls(types.ModuleType("changed"), 0.3, 0.01)


def test_a_message_object_not_uploaded_yet_is_asked_for_again_within_a_tenth_of_a_second():
    """Flower waits 1 s before asking again; the coordinator's Grid and the SuperNode retry after 0.05 s."""
    import time
    import types

    import flwr.superlink.grid.http_grid as http_grid
    import flwr.supernode.start_client_internal as supernode_loop
    from flwr.supercore.inflatable import inflatable_utils
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

    from common.object_pulls import quicker_object_retries

    # The premise: both receivers call Flower's pull_objects through their module's global name
    # (the ServerApp, run in this process by other tests, may have rebound http_grid's already).
    assert quicker_object_retries(http_grid) and quicker_object_retries(supernode_loop)
    receiver = types.ModuleType("receiver")
    receiver.pull_objects = inflatable_utils.pull_objects
    assert quicker_object_retries(receiver) and not quicker_object_retries(types.ModuleType("moved"))
    assert quicker_object_retries(receiver)  # once more: still Flower's function, bound once
    uploaded: set[str] = set()

    def pull_object(object_id: str) -> bytes:
        if object_id not in uploaded:
            uploaded.add(object_id)  # there by the time it is asked for again
            raise ObjectUnavailableError(object_id)
        return object_id.encode()

    started = time.monotonic()
    assert receiver.pull_objects(["a", "b"], pull_object) == {"a": b"a", "b": b"b"}
    assert time.monotonic() - started < 0.5


def test_supernode_launcher_heartbeat_premise():
    """The launcher's heartbeat: Flower keeps it in these two modules, and 10 s is its minimum."""
    import flwr.supercore.heartbeat as heartbeat
    import flwr.supernode.fleet_http_connection as connection
    from flwr.common.constant import HEARTBEAT_MIN_INTERVAL, HEARTBEAT_PATIENCE

    from deploy.site.supernode_launcher import DEFAULT_HEARTBEAT_S, shorten_heartbeat

    assert HEARTBEAT_MIN_INTERVAL <= DEFAULT_HEARTBEAT_S and HEARTBEAT_PATIENCE == 2
    before = (connection.HEARTBEAT_DEFAULT_INTERVAL, heartbeat.HEARTBEAT_DEFAULT_INTERVAL)
    try:
        assert shorten_heartbeat([connection, heartbeat], DEFAULT_HEARTBEAT_S)
        assert connection.HEARTBEAT_DEFAULT_INTERVAL == heartbeat.HEARTBEAT_DEFAULT_INTERVAL == DEFAULT_HEARTBEAT_S
    finally:
        connection.HEARTBEAT_DEFAULT_INTERVAL, heartbeat.HEARTBEAT_DEFAULT_INTERVAL = before
