"""A site's memory: a model held once while it trains, and freed memory back to the host between messages.

Why it matters: three sites' tasks of a 100M-parameter round each held ~4.7 GB at the same moment
and did not fit this 23 GB host (``python -m bench.payload``); see client/host_memory.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from client.host_memory import RETURN_LARGE_BLOCKS_ENV, _glibc
from client.local_round import SiteRound
from client.site import SiteContext
from common.model import build_model
from common.settings import RunSettings
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.host.flower import flower_env

REPOSITORY = Path(__file__).resolve().parents[2]  # where the child imports client/ from
TINY = {
    "training": {"local_steps": 2, "patch_size": 16, "batch_size": 1, "learning_rate": 0.05},
    "model": {"channels": [4, 8, 16], "strides": [2, 2]},
}

# In a fresh interpreter with the Flower processes' environment: 200 MB in 20 MB blocks (above the
# threshold), written (so resident) and freed, once outside kept_while_computing and once inside it.
_CHURN = """
import json
from client.host_memory import kept_while_computing

def resident() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * 4096

def churn() -> int:
    blocks = [b"\\x01" * (20 << 20) for _ in range(10)]
    held = resident()
    del blocks
    return held

start = resident()
peak_outside = churn()
after_outside = resident()
with kept_while_computing():
    peak_inside = churn()
    kept_inside = resident()
after_inside = resident()
print(json.dumps({"start": start, "peak_outside": peak_outside, "after_outside": after_outside,
                  "peak_inside": peak_inside, "kept_inside": kept_inside, "after_inside": after_inside}))
"""


@pytest.mark.skipif(_glibc() is None, reason="the allocator settings are glibc's (a Linux host)")
def test_freed_blocks_go_back_to_the_host_except_while_computing(tmp_path):
    assert RETURN_LARGE_BLOCKS_ENV.items() <= flower_env(tmp_path).items()  # every Flower process gets it
    env = {**os.environ, **RETURN_LARGE_BLOCKS_ENV, "PYTHONPATH": str(REPOSITORY)}
    done = subprocess.run([sys.executable, "-c", _CHURN], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    mb = {key: value / 2**20 for key, value in json.loads(done.stdout).items()}
    assert mb["peak_outside"] - mb["start"] > 180 and mb["peak_inside"] - mb["start"] > 180, mb
    assert mb["after_outside"] - mb["start"] < 30, mb  # handed back as soon as freed
    assert mb["kept_inside"] - mb["start"] > 180, mb  # kept for the next training step
    assert mb["after_inside"] - mb["start"] < 30, mb  # handed back once the computing is done


@pytest.fixture
def site(tmp_path) -> SiteContext:
    write_site(DEMO_SITES[0], tmp_path / "data", 2, 1, size=32)
    return SiteContext("site-a", tmp_path / "data", tmp_path / "cache", "cpu", 1)


@pytest.mark.parametrize("dp", [False, True])
def test_training_in_place_holds_the_model_once_except_under_dp(site, dp):
    settings = RunSettings.model_validate({**TINY, "privacy": {"differential_privacy": dp, "clipping_norm": 0.01}})
    torch.manual_seed(0)
    weights = build_model(settings.model).state_dict()
    incoming = {name: tensor.clone() for name, tensor in weights.items()}
    trained, _ = SiteRound.prepare(site, settings).train(weights, 1, in_place=True)
    moved = [name for name in weights if not torch.equal(weights[name], incoming[name])]
    if dp:  # clipping needs the weights it started from: they are left as they came
        assert not moved
        assert all(trained[name].data_ptr() != weights[name].data_ptr() for name in weights)
    else:  # the trained model is the incoming tensors themselves, now holding the trained values
        assert moved
        assert all(trained[name].data_ptr() == weights[name].data_ptr() for name in weights)


def test_training_without_in_place_leaves_the_incoming_weights_alone(site):
    settings = RunSettings.model_validate(TINY)
    weights = build_model(settings.model).state_dict()
    incoming = {name: tensor.clone() for name, tensor in weights.items()}
    trained, _ = SiteRound.prepare(site, settings).train(weights, 1)
    assert all(torch.equal(weights[name], incoming[name]) for name in weights)
    assert any(not torch.equal(trained[name], incoming[name]) for name in weights)
