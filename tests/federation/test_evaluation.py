"""Federated evaluation (``insite coord evaluate``): the real ServerApp and ClientApp over the stub Grid.

A small run trains two checkpoints at two sites; the evaluation scores models at three sites, the
third holding no validation case. Every reply passes the sites' real egress guard and ledger. The
same path over real SuperLink/SuperNode processes is in test_evaluation_federation.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flwr.app import MetricRecord, RecordDict
from monai.networks.nets import UNet

from client.egress import EgressRefused, check_reply
from client.ledger import Ledger
from client.local_only import model_path, train_local_only
from client.local_round import SiteRound
from client.personalise import model_path as personalised_model_path
from client.site import SiteContext
from common.evaluation import scoring_settings
from common.run_record import RunRecord, checkpoint_path, load_checkpoint
from common.settings import ModelSettings, RunSettings
from deploy.coordinator.evaluation import (
    LOCAL_ONLY,
    PERSONALISED,
    file_with_training_runs,
    latest_result,
    prepare_evaluation,
    read_models,
)
from deploy.coordinator.evaluation_models import ModelRefused, model_settings_of
from deploy.in_process.federation import evaluate_in_process, run_in_process, site_grid
from harness.federation import write_sphere_site
from publication.bundle_configs import inference_config

TRAINING_SITES = ("site-a", "site-b")
NO_VALIDATION = "site-c"
TRANSPORT = {"tls": True, "node_auth": True}


def run_settings() -> RunSettings:
    return RunSettings.model_validate(
        {
            "rounds": 2,
            "min_sites": 2,
            "round_timeout_s": 60,
            "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
            "training": {"local_steps": 2, "patch_size": 32, "mixed_precision": False, "personalise_steps": 5},
            "aggregation": {"mode": "plain"},
            "faults": {"straggler_grace_s": 0.3, "quorum_wait_s": 3},
        }
    )


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sites")
    folders = {site: write_sphere_site(root / site, 10 * n, train=2, val=2) for n, site in enumerate(TRAINING_SITES)}
    folders[NO_VALIDATION] = write_sphere_site(root / NO_VALIDATION, 50, train=2, val=0)
    return folders


@pytest.fixture(scope="module")
def trained(sites, tmp_path_factory) -> Path:
    """A finished two-round run of the training sites: checkpoints round-0001 and round-0002."""
    run_dir = tmp_path_factory.mktemp("training") / "run"
    training_sites = {name: sites[name] for name in TRAINING_SITES}
    record = run_in_process(run_dir, run_settings(), site_grid(run_dir, run_settings(), training_sites))
    assert record.read()["status"] == "completed"
    return run_dir


def site_context(run_dir: Path, name: str, folder: Path) -> SiteContext:
    """The site as site_grid starts it (same cache folder, so the same ledger)."""
    return SiteContext(name, folder, run_dir.parent / "site-caches" / name, "auto", 1)


def evaluate(
    paths: list[Path], sites: dict[str, Path], run_dir: Path, local_only: bool = False, personalised: bool = False
) -> dict:
    """What 'insite coord evaluate' does, with the ServerApp over the stub Grid instead of a SuperLink."""
    settings = run_settings()
    models, refused = read_models(paths, settings.training.patch_size)
    prepare_evaluation(run_dir, settings, models, refused, local_only, TRANSPORT, personalised)
    record = evaluate_in_process(run_dir, settings, site_grid(run_dir, settings, sites))
    assert record.read()["status"] == "completed"
    return latest_result(run_dir)


def scored_at_site(run_dir: Path, site: str, folder: Path, weights: dict, window: int) -> dict[str, float]:
    """What the site computes locally for ``weights``: the same network, cases and window."""
    settings = scoring_settings(
        run_settings(), {"model-settings": run_settings().model.model_dump_json(), "window": window}
    )
    job = SiteRound.prepare(site_context(run_dir, site, folder), settings)
    scores = job.evaluate_held_out(weights)
    assert scores["dice"] == job.evaluate(weights)["dice"]  # the Dice of the rounds' own scoring
    return scores


def test_two_checkpoints_score_as_each_site_computes_locally(trained, sites, tmp_path):
    rounds = [checkpoint_path(trained, 1), checkpoint_path(trained, 2)]
    run_dir = tmp_path / "evaluation"
    result = evaluate(rounds, sites, run_dir)

    assert [model["name"] for model in result["models"]] == ["run/round-0001", "run/round-0002"]
    for model, path in zip(result["models"], rounds, strict=True):
        assert model["kind"] == "insite checkpoint"
        assert set(model["sites"]) == set(TRAINING_SITES)
        weights = load_checkpoint(path).weights
        for site in TRAINING_SITES:
            local = scored_at_site(run_dir, site, sites[site], weights, model["window"])
            assert model["sites"][site] == {"num_val": 2.0, "dice": local["dice"], "hd95": local["hd95"]}
        # the site without validation cases is named with its reason; the others' scores came back
        assert NO_VALIDATION in model["failures"][NO_VALIDATION]
        assert "no validation cases" in model["failures"][NO_VALIDATION]
    first, second = result["models"]
    assert first["sites"] != second["sites"]  # two different models, two different scores

    # what left the sites is in their ledgers: scores only, as allow-listed scalars
    ledger = Ledger(site_context(run_dir, "site-a", sites["site-a"]).cache_path).entries()
    scored = [entry for entry in ledger if entry["kind"] == "evaluate.model"]
    assert len(scored) == 2 and all("metrics num-examples=2, dice=" in entry["detail"] for entry in scored)

    # kept in the run history: the evaluation's own run.json, and the training run it judged
    assert RunRecord(run_dir).read()["settings"]["task"] == "evaluate"
    assert file_with_training_runs(run_dir, result) == [trained.resolve()]
    assert RunRecord(trained).read()["evaluations"][-1]["models"] == result["models"]


def write_bundle(folder: Path, inference: dict | str, weights: dict[str, torch.Tensor]) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    text = inference if isinstance(inference, str) else json.dumps(inference, indent=1)
    (folder / "configs" / "inference.json").write_text(text)
    (folder / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    torch.save(weights, folder / "models" / "model.pt")
    return folder


def independent_bundle(folder: Path, network: dict) -> Path:
    """A MONAI bundle as someone else would write it: the network built by MONAI directly."""
    torch.manual_seed(7)
    arguments = {key: value for key, value in network.items() if key != "_target_"}
    model = UNet(**arguments)
    inference = {"network_def": network, "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32]}}
    return write_bundle(folder, inference, model.state_dict())


FOREIGN_UNET = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 1,
    "norm": "instance",
}


def test_bundles_exported_and_foreign_are_scored_and_bad_ones_refused(trained, sites, tmp_path):
    settings = run_settings()
    exported = write_bundle(
        tmp_path / "export" / "bundle", inference_config(settings), load_checkpoint(checkpoint_path(trained, 2)).weights
    )
    (exported.parent / "manifest.toml").write_text("# the approved manifest sits beside an exported bundle\n")
    foreign = independent_bundle(tmp_path / "foreign", FOREIGN_UNET)
    broken = write_bundle(tmp_path / "broken", '{"network_def": {"_target_": "UNet",', {})
    batch_norm = independent_bundle(tmp_path / "batch-norm", {**FOREIGN_UNET, "norm": "batch"})
    wider = write_bundle(
        tmp_path / "wider",
        {"network_def": FOREIGN_UNET},
        UNet(**{k: v for k, v in FOREIGN_UNET.items() if k != "_target_"} | {"channels": [8, 16, 32]}).state_dict(),
    )

    result = evaluate([exported.parent, foreign, broken, batch_norm, wider], sites, tmp_path / "evaluation")

    kinds = {model["name"]: model["kind"] for model in result["models"]}
    assert kinds == {"export": "insite export", "foreign": "MONAI bundle"}
    for model in result["models"]:
        assert set(model["sites"]) == set(TRAINING_SITES) and set(model["failures"]) == {NO_VALIDATION}
    assert result["models"][1]["window"] == 32  # the bundle's own sliding window
    refused = result["refused"]
    assert set(refused) == {"broken", "batch-norm", "wider"}
    assert refused["broken"].startswith("broken: ") and "not readable JSON" in refused["broken"]
    assert refused["batch-norm"].startswith("batch-norm: ") and "norm='batch'" in refused["batch-norm"]
    assert refused["wider"].startswith("wider: ") and "has shape (8, 1, 3, 3, 3)" in refused["wider"]


@pytest.mark.parametrize(
    ("network", "reason"),
    [
        ({"_target_": "monai.networks.nets.SegResNet", "spatial_dims": 3}, "sites build only monai.networks.nets.UNet"),
        ({**FOREIGN_UNET, "_target_": "$__import__('os').system('true')"}, "never run a bundle's code"),
        ({**FOREIGN_UNET, "channels": "$[4, 8, 16]"}, "does not describe a UNet the sites build"),
        ({**FOREIGN_UNET, "in_channels": 4}, "in_channels=4"),
        ({**FOREIGN_UNET, "dimensions": 3}, "argument 'dimensions' is not one"),
    ],
)
def test_a_network_the_sites_cannot_build_is_refused_by_name(network, reason):
    with pytest.raises(ModelRefused, match="^public-model: ") as refused:
        model_settings_of(network, "public-model")
    assert reason in str(refused.value)


def test_nothing_to_score_is_refused_before_any_site_is_asked(tmp_path):
    models, refused = read_models([tmp_path / "missing.pt"], 32)
    with pytest.raises(ModelRefused, match="no model the sites can score: .*missing: .*missing.pt does not exist"):
        prepare_evaluation(tmp_path / "evaluation", run_settings(), models, refused, False, TRANSPORT)
    assert not (tmp_path / "evaluation").exists()


def test_local_only_models_stay_home_and_only_their_scores_leave(trained, sites, tmp_path):
    run_dir = tmp_path / "evaluation"
    for name in TRAINING_SITES:
        train_local_only(site_context(run_dir, name, sites[name]), run_settings())
    result = evaluate([checkpoint_path(trained, 2)], sites, run_dir, local_only=True)

    consensus, local_only = result["models"]
    assert local_only["name"] == LOCAL_ONLY and local_only["kind"] == "local-only"
    for name in TRAINING_SITES:
        site = site_context(run_dir, name, sites[name])
        saved = torch.load(model_path(site), weights_only=True)
        local = SiteRound.prepare(site, run_settings()).evaluate_held_out(saved["weights"])
        assert local_only["sites"][name] == {"num_val": 2.0, "dice": local["dice"], "hd95": local["hd95"]}
        assert local_only["sites"][name] != consensus["sites"][name]
    assert "no local-only model" in local_only["failures"][NO_VALIDATION]
    ledger = Ledger(site_context(run_dir, "site-b", sites["site-b"]).cache_path).entries()
    assert any("local-only-dice=" in entry["detail"] for entry in ledger if entry["kind"] == "evaluate.local_only")


def test_each_site_adapts_the_consensus_model_keeps_it_and_sends_only_its_scores(trained, sites, tmp_path):
    consensus = checkpoint_path(trained, 2)
    run_dir = tmp_path / "evaluation"
    result = evaluate([consensus], sites, run_dir, personalised=True)

    plain, adapted = result["models"]
    assert adapted["name"] == f"{plain['name']} {PERSONALISED}" and adapted["kind"] == "personalised"
    weights = load_checkpoint(consensus).weights
    for name in TRAINING_SITES:
        site = site_context(run_dir, name, sites[name])
        kept = torch.load(personalised_model_path(site), weights_only=True)["weights"]
        assert not torch.equal(kept["model.0.conv.unit0.conv.weight"], weights["model.0.conv.unit0.conv.weight"])
        local = scored_at_site(run_dir, name, sites[name], kept, adapted["window"])
        assert adapted["sites"][name] == {"num_val": 2.0, "dice": local["dice"], "hd95": local["hd95"]}
        entries = Ledger(site.cache_path).entries()
        sent = [entry for entry in entries if entry["kind"] == "evaluate.personalised"]
        assert len(sent) == 1 and sent[0]["detail"].startswith("metrics ") and "personalised-dice=" in sent[0]["detail"]
    assert "no validation cases" in adapted["failures"][NO_VALIDATION]


def test_egress_allows_the_evaluation_scores_and_nothing_else():
    model = ModelSettings()
    scores = {"num-examples": 2.0, "dice": 0.5, "hd95": 3.0, "local-only-dice": 0.4, "local-only-hd95": 4.0}
    check_reply(RecordDict({"metrics": MetricRecord(scores)}), model, "site-a")
    with pytest.raises(EgressRefused, match="local-only-weights-norm"):
        check_reply(RecordDict({"metrics": MetricRecord({"local-only-weights-norm": 1.0})}), model, "site-a")


def test_cli_refuses_a_broken_bundle_by_name_before_anything_runs(insite, tmp_path):
    broken = write_bundle(tmp_path / "broken", "{ not json", {})
    result = insite("coord", "evaluate", broken, "--dir", tmp_path / "consortium")
    result.one_line_error("no model the sites can score", "broken: ", "inference.json is not readable JSON")
    assert not (tmp_path / "consortium").exists()
