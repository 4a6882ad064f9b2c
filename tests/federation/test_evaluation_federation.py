"""A real federated evaluation on loopback: SuperLink + 3 SuperNodes (TLS, node auth, app approval).

Two rounds train two checkpoints; the evaluation then scores both, a MONAI bundle written here
independently of the project, and each site's local-only model, at three sites, one of which holds
no validation case. What the sites report must equal what each computes locally.
"""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import UNet

from client.ledger import Ledger
from client.local_only import model_path
from client.local_round import SiteRound
from common.evaluation import scoring_settings
from common.run_record import RunRecord, checkpoint_path, load_checkpoint
from common.settings import RunSettings
from deploy.coordinator.evaluation import LOCAL_ONLY, latest_result, prepare_evaluation, read_models
from deploy.demo.evaluation import train_local_only_models
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace, default_threads, provision_demo, run_demo_federation

# About 9 min on the shared 2-core machine (a ClientApp process per site and model): slow; the same
# paths run in-process, fast, in test_evaluation.py.
pytestmark = [pytest.mark.federation, pytest.mark.slow, pytest.mark.timeout(1200)]

NETWORK = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}


def test_real_federation_scores_checkpoints_bundle_and_local_only_models(tmp_path):
    space = Workspace(tmp_path)
    names = [profile.name for profile in DEMO_SITES]
    no_validation = names[-1]
    for profile in DEMO_SITES:
        write_site(
            profile, space.site_dir(profile.name) / "data", 2, 0 if profile.name == no_validation else 2, size=32
        )
    provision_demo(space, names)
    settings = RunSettings.model_validate(
        {
            "rounds": 2,
            "min_sites": 2,
            "round_timeout_s": 300,
            "training": {"local_steps": 2, "patch_size": 16, "batch_size": 1},
            "model": NETWORK,
            "aggregation": {"mode": "plain"},
        }
    )
    RunRecord(space.run_dir).create("test", settings, transport={"tls": True})
    assert run_demo_federation(space, settings, lambda _: None, lambda _: None)["status"] == "completed"
    train_local_only_models(space, settings, lambda site, done: None)

    torch.manual_seed(3)
    bundle = tmp_path / "public-model"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    network = {"_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": {**network, **NETWORK}}))
    torch.save(UNet(spatial_dims=3, in_channels=1, out_channels=2, **NETWORK).state_dict(), bundle / "models/model.pt")
    paths = [checkpoint_path(space.run_dir, 1), checkpoint_path(space.run_dir, 2), bundle]
    models, refused = read_models(paths, settings.training.patch_size)
    assert not refused
    prepare_evaluation(space.evaluation_dir, settings, models, refused, True, {"tls": True})
    record = run_demo_federation(space, settings, lambda _: None, lambda _: None, run_dir=space.evaluation_dir)
    assert record["status"] == "completed"
    result = latest_result(space.evaluation_dir)

    assert [m["name"] for m in result["models"]] == ["run/round-0001", "run/round-0002", "public-model", LOCAL_ONLY]
    scorers = names[:-1]
    threads = default_threads(len(names))
    for model, candidate in zip(result["models"], [*models, None], strict=True):
        assert set(model["sites"]) == set(scorers), model["failures"]
        assert set(model["failures"]) == {no_validation}
        assert model["failures"][no_validation].startswith(f"site {no_validation}: ")
        for name in scorers:
            site = space.site(name, threads).context
            if candidate is None:  # the local-only model, read where it stays: at the site
                saved = torch.load(model_path(site), weights_only=True)
                weights, scoring = saved["weights"], RunSettings.model_validate_json(saved["settings"])
            else:
                weights = candidate.weights
                config = {"model-settings": candidate.model.model_dump_json(), "window": candidate.window}
                scoring = scoring_settings(settings, config)
            local = SiteRound.prepare(site, scoring).evaluate_held_out(weights)
            assert model["sites"][name] == pytest.approx(
                {"num_val": 2.0, "dice": local["dice"], "hd95": local["hd95"]}, abs=1e-6
            )
    assert "no validation cases" in result["models"][0]["failures"][no_validation]
    first, second = result["models"][:2]
    assert first["sites"] != second["sites"]
    assert not torch.equal(
        load_checkpoint(paths[0]).weights["model.0.conv.unit0.conv.weight"],
        load_checkpoint(paths[1]).weights["model.0.conv.unit0.conv.weight"],
    )
    for name in scorers:  # every score that left a site is in its ledger, and nothing but scores
        entries = Ledger(space.site(name, 1).context.cache_path).entries()
        evaluations = [e for e in entries if e["kind"].startswith("evaluate.")]
        assert len(evaluations) == 4 and all(e["detail"].startswith("metrics ") for e in evaluations)
