"""A task for the warm ClientApp worker's tests: what one message's process did, told on its stdout.

``python -m harness.warm_tasks worker NAME`` runs a worker whose tasks run :func:`report`;
``python -m harness.warm_tasks relay STEP...`` is a relay (the script SuperExec starts) for it.
Steps: ``out TEXT``, ``env NAME``, ``cwd``, ``pids``, ``state``, ``pidfile PATH``, ``sleep S``, ``exit CODE``,
``thread S TEXT`` (a thread that prints TEXT after S seconds, left running when the task returns).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from deploy.site.warm_clientapp import relay, serve

touched = 0  # a task that changes module state: the next task must not see it


def _say_later(seconds: float, text: str) -> None:
    time.sleep(seconds)
    print(text, flush=True)


def report() -> None:
    global touched
    steps = sys.argv[1:]
    while steps:
        step = steps.pop(0)
        if step == "out":
            print(steps.pop(0), flush=True)
        elif step == "env":
            print(f"{steps[0]}={os.environ.get(steps.pop(0))}", flush=True)
        elif step == "cwd":
            print(f"cwd={os.getcwd()}", flush=True)
        elif step == "pids":
            print(f"pid={os.getpid()} parent={os.getppid()}", flush=True)
        elif step == "state":
            touched += 1
            print(f"touched={touched}", flush=True)
        elif step == "pidfile":
            Path(steps.pop(0)).write_text(str(os.getpid()))
        elif step == "sleep":
            time.sleep(float(steps.pop(0)))
        elif step == "thread":
            threading.Thread(target=_say_later, args=(float(steps.pop(0)), steps.pop(0))).start()
        elif step == "exit":
            sys.exit(int(steps.pop(0)))


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        serve(sys.argv[2], os.getppid(), task=report, preload=("json",))
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    relay(task=report)
