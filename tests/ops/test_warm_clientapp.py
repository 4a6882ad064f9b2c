"""The warm ClientApp worker (deploy/site/warm_clientapp.py): real processes, real sockets, real signals.

The worker here runs a test task (tests/harness/warm_tasks.py) instead of Flower's ClientApp, so
each fault can be aimed at one process; the federation tests run the real ClientApp through it
(every SuperNode the project starts has one), and the killed-ClientApp fault test kills its task.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import deploy.site.supernode_launcher as launcher
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.site.warm_clientapp import PRELOAD, SOCKET_ENV, THREADS_S

ROOT = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, "-m", "harness.warm_tasks"]
T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture()
def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
        SOCKET_ENV: f"insite-test-{secrets.token_hex(6)}",
    }


@pytest.fixture()
def worker(env) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([*HARNESS, "worker", env[SOCKET_ENV]], env=env, cwd=ROOT)
    wait_for(lambda: listening(env[SOCKET_ENV]), "the worker to listen")
    yield process
    process.kill()
    process.wait(timeout=10)


def listening(name: str) -> bool:
    """Whether a socket is bound to abstract name ``name`` (listed as ``@name``)."""
    return f" @{name}\n" in Path("/proc/net/unix").read_text()


def relay(env: dict[str, str], *steps: str, cwd: Path = ROOT, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*HARNESS, "relay", *steps], env=env, cwd=cwd, text=True, **kwargs)


def test_a_message_runs_in_a_task_forked_from_the_worker_with_the_relays_arguments_streams_and_status(
    worker, env, tmp_path
):
    env = {**env, "SITE_SETTING": "from the relay"}
    steps = ["out", "hello", "env", "SITE_SETTING", "cwd", "pids", "state", "exit", "3"]
    first = relay(env, *steps, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 3, err
    lines = out.splitlines()
    assert lines[:3] == ["hello", "SITE_SETTING=from the relay", f"cwd={tmp_path}"]
    assert lines[3].endswith(f"parent={worker.pid}") and f"pid={first.pid} " not in lines[3]
    assert lines[4] == "touched=1"
    second = relay(env, "state", stdout=subprocess.PIPE)
    assert second.communicate(timeout=60)[0] == "touched=1\n"  # the first task's change died with it
    assert second.returncode == 0


def test_a_task_ends_when_its_threads_do_as_an_interpreter_would_within_flowers_exit_grace(worker, env):
    """A ClientApp may leave work running after its reply (client/incoming_score.py): it is not cut off."""
    quick = relay(env, "thread", "0.5", "after the reply", "out", "reply", stdout=subprocess.PIPE)
    assert quick.communicate(timeout=60)[0] == "reply\nafter the reply\n" and quick.returncode == 0
    started = time.monotonic()
    stuck = relay(env, "thread", "60", "never", "out", "reply", stdout=subprocess.PIPE)
    assert stuck.communicate(timeout=60)[0] == "reply\n" and stuck.returncode == 0
    assert time.monotonic() - started < THREADS_S + 5


def test_a_killed_task_ends_its_relay_with_that_signal(worker, env, tmp_path):
    pidfile = tmp_path / "task.pid"
    waiting = relay(env, "pidfile", str(pidfile), "sleep", "300")
    task = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), "the task to start"))
    os.kill(task, signal.SIGKILL)
    assert waiting.wait(timeout=10) == 128 + signal.SIGKILL
    assert alive(worker.pid)
    assert relay(env, "exit", "0").wait(timeout=60) == 0  # the next message runs as usual


def test_a_killed_relay_takes_its_task_with_it(worker, env, tmp_path):
    pidfile = tmp_path / "task.pid"
    waiting = relay(env, "pidfile", str(pidfile), "sleep", "300")
    task = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), "the task to start"))
    waiting.kill()
    waiting.wait(timeout=10)
    wait_for(lambda: not alive(task), "the task of the killed relay to end", timeout=10)


def test_a_signal_to_the_relay_reaches_its_task(worker, env, tmp_path):
    pidfile = tmp_path / "task.pid"
    waiting = relay(env, "pidfile", str(pidfile), "sleep", "300")
    wait_for(pidfile.exists, "the task to start")
    waiting.terminate()  # as a SuperNode stopping its ClientApps would
    assert waiting.wait(timeout=10) == 128 + signal.SIGTERM


def test_a_stop_signal_to_the_supernodes_group_leaves_the_worker_to_end_with_its_supernode(worker, env):
    worker.terminate()  # what stopping the SuperNode's process group sends it too
    time.sleep(1.0)
    assert worker.poll() is None
    assert relay(env, "exit", "5").wait(timeout=60) == 5


def test_a_killed_worker_ends_its_tasks_and_their_relays(worker, env, tmp_path):
    pidfile = tmp_path / "task.pid"
    waiting = relay(env, "pidfile", str(pidfile), "sleep", "300", stderr=subprocess.PIPE)
    task = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), "the task to start"))
    worker.kill()
    _, err = waiting.communicate(timeout=20)
    assert waiting.returncode == 1 and "the warm ClientApp worker went away during this message" in err
    wait_for(lambda: not alive(task), "the task of the killed worker to end", timeout=10)


def test_without_a_worker_the_message_runs_cold_in_the_relays_own_process(env):
    cold = relay(env, "pids", "exit", "4", stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # no worker started
    out, err = cold.communicate(timeout=60)
    assert cold.returncode == 4
    assert out.startswith(f"pid={cold.pid} ")
    assert "warm ClientApp worker unavailable" in err and "running this message cold" in err


def test_the_launcher_starts_the_worker_again_when_it_ends_and_it_ends_with_the_supernode(env):
    name = env[SOCKET_ENV]
    supernode = subprocess.Popen(
        [sys.executable, "-c", f"import time, {launcher.__name__} as l; l.keep_warm_worker({name!r}); time.sleep(600)"],
        env=env,
        cwd=ROOT,
    )
    try:
        first = wait_for(lambda: worker_pids(supernode.pid), "the warm worker", timeout=60)[0]
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: [pid for pid in worker_pids(supernode.pid) if pid != first], "a new worker", 60)
        supernode.kill()
        supernode.wait(timeout=10)
        wait_for(lambda: not alive(second[0]), "the worker to end with its SuperNode", timeout=10)
    finally:
        supernode.kill()


def worker_pids(parent: int) -> list[int]:
    """The warm workers ``parent`` started (any of its threads)."""
    found: list[int] = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        children = task / "children"
        found += [int(pid) for pid in children.read_text().split()] if children.exists() else []
    return [
        pid
        for pid in found
        if alive(pid) and b"deploy.site.warm_clientapp" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def test_after_the_preload_a_training_message_imports_nothing_but_the_app(env, tmp_path):
    """A round at a site (scoring, one step, its client to the SuperNode) after :data:`PRELOAD` imports nothing heavy.

    What is not preloaded, each message imports again: torch's first optimiser step alone pulls in
    torch._dynamo and sympy, seconds per message.
    """
    write_site(DEMO_SITES[0], tmp_path / "data", 2, 1, size=32)
    script = f"""
import importlib, sys
from pathlib import Path
for name in {PRELOAD!r}:
    importlib.import_module(name)
before = set(sys.modules)
from client.local_round import SiteRound
from client.site import SiteContext
from common.model import build_model
from common.settings import RunSettings
settings = RunSettings.model_validate({{"model": {{"channels": [4, 8], "strides": [2]}},
                                        "training": {{"local_steps": 1, "batch_size": 1, "patch_size": 16}}}})
site = SiteContext("site-a", Path({str(tmp_path / "data")!r}), Path({str(tmp_path / "cache")!r}), "cpu", 1)
weights = build_model(settings.model).state_dict()
SiteRound.prepare(site, settings).score_and_train(dict(weights), 1, True, "run-key")
from flwr.supercore.runtime import RuntimeHttpClient
RuntimeHttpClient.from_server_address("127.0.0.1:9", True, None, [])  # what every task opens to its SuperNode
import client.app, client.secure, client.personalise, client.statistics, client.local_only
ours = {{*sys.stdlib_module_names, "client", "common"}}
third_party = [m for m in set(sys.modules) - before if m.split(".")[0] not in ours]
print(sorted(third_party))
"""
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
