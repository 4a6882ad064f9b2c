"""The demo's local-only models: the sites train side by side, and a site that cannot train says why."""

from __future__ import annotations

import torch

from client.local_only import model_path
from common.settings import RunSettings
from deploy.demo.evaluation import train_local_only_models
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace


def test_sites_train_side_by_side_and_a_failing_site_leaves_no_stale_model(tmp_path):
    space = Workspace(tmp_path)
    trained, broken = [profile.name for profile in DEMO_SITES[:2]], DEMO_SITES[2].name
    for profile in DEMO_SITES[:2]:
        write_site(profile, space.site_dir(profile.name) / "data", 2, 1, size=32)
    (space.site_dir(broken) / "data").mkdir(parents=True)  # no cases: ingest never ran there
    stale = model_path(space.site(broken, 1).context)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's model")
    settings = RunSettings.model_validate(
        {
            "rounds": 2,
            "training": {"local_steps": 2, "patch_size": 16, "batch_size": 1, "mixed_precision": False},
            "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
        }
    )
    progress: list[tuple[str, int]] = []

    failed = train_local_only_models(space, settings, lambda site, done: progress.append((site, done)))

    assert list(failed) == [broken]
    assert str(failed[broken]).startswith(f"site {broken}")
    assert not stale.exists()
    for name in trained:
        assert [done for site, done in progress if site == name] == [1, 2]
        saved = torch.load(model_path(space.site(name, 1).context), weights_only=True)
        assert RunSettings.model_validate_json(saved["settings"]) == settings
    first, second = (torch.load(model_path(space.site(n, 1).context))["weights"] for n in trained)
    assert not torch.equal(first["model.0.conv.unit0.conv.weight"], second["model.0.conv.unit0.conv.weight"])
