"""A real federation on loopback: SuperLink + 3 SuperNodes, TLS, node auth; interrupt and resume."""

import json

import pytest
import torch

from common.model import build_model
from common.run_record import RunRecord, load_checkpoint, resume_point
from common.settings import RunSettings
from deploy.coordinator.proxy import ACCESS_LOG
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace, provision_demo, run_demo_federation
from deploy.host.held_polls import HOLD_S

pytestmark = [pytest.mark.federation, pytest.mark.timeout(900)]


class Interrupt(Exception):
    pass


def test_federation_trains_checkpoints_and_resumes(tmp_path):
    space = Workspace(tmp_path)
    for profile in DEMO_SITES:
        write_site(profile, space.site_dir(profile.name) / "data", 2, 1, size=32)
    provision_demo(space, [p.name for p in DEMO_SITES])
    settings = RunSettings.model_validate(
        {
            "rounds": 4,
            "min_sites": 3,
            "round_timeout_s": 300,
            "training": {"local_steps": 2, "patch_size": 16, "batch_size": 1},
            "model": {"channels": [4, 8, 16], "strides": [2, 2]},
        }
    )
    RunRecord(space.run_dir).create("test", settings, transport={"tls": True})

    def stop_after_round_one(row):
        if row["round"] == 1:
            raise Interrupt  # like a coordinator crash: every process is reaped

    with pytest.raises(Interrupt):
        run_demo_federation(space, settings, lambda _: None, stop_after_round_one)
    # The coordinator goes on until its processes are reaped: a round or so after round 1 was
    # recorded (rounds of this tiny model take seconds), it may have recorded and checkpointed more.
    rows = RunRecord(space.run_dir).rounds()
    assert [r["round"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) < 4
    assert set(rows[0]["sites"]) == {"site-a", "site-b", "site-c"}
    assert all("dice" in m and m["num_train"] == 2 for m in rows[0]["sites"].values())

    # A round is scored by the next round's training replies, so the coordinator may already have
    # checkpointed a round not yet scored when it stopped: the resumed run scores it first.
    resumed_settings, done, _checkpoint = resume_point(space.run_dir)
    assert len(rows) <= done < 4 and resumed_settings == settings
    record = run_demo_federation(space, settings, lambda _: None, lambda _: None)  # continues from `checkpoint`
    assert record["status"] == "completed" and len(record["flower_runs"]) == 2
    first_run = len(rows)
    rows = RunRecord(space.run_dir).rounds()
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert all(set(r["sites"]) == {"site-a", "site-b", "site-c"} for r in rows)
    # A round the first run closed while its sites were being reaped may lack a site's score (its
    # reply never came); the row then says so. Every round the resumed run closed has them all.
    for row in rows[:first_run]:
        unscored = [site for site, m in row["sites"].items() if "dice" not in m]
        assert all("scoring" in row["failures"].get(site, "") for site in unscored), row
    assert all("dice" in m for r in rows[first_run:] for m in r["sites"].values())
    assert "eval_exchange_s" in rows[-1]  # the last model is scored by a final evaluate exchange
    torch.manual_seed(settings.seed)
    initial = build_model(settings.model).state_dict()
    final = load_checkpoint(space.run_dir / "checkpoints" / "round-0004.pt").weights
    assert any(not torch.equal(initial[k], final[k]) for k in initial)
    assert json.loads((space.run_dir / "run.json").read_text())["sites"] == ["site-a", "site-b", "site-c"]
    # An idle site's poll was held by the SuperLink until a message came or HOLD_S passed
    # (deploy/host/held_polls.py); Flower answers it at once, in milliseconds.
    log = (space.logs / ACCESS_LOG).read_text().splitlines()
    polls = [float(line.split()[-1]) for line in log if '"POST /v1/fleet/pull-messages ' in line]
    assert sum(seconds >= 0.9 * HOLD_S for seconds in polls) >= 3, polls
