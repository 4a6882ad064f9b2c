"""Flower's wait before it asks again for a message object not uploaded yet: 0.05 s, not 1 s.

Why. Flower makes a message visible to its receiver as soon as the sender has announced it, while
the message's objects (its records, the model weights) are still being uploaded. A receiver that
finds it in that window asks for a missing object again only after ``PULL_INITIAL_BACKOFF``, a
whole second, then 2 s, 4 s... The coordinator looks for replies every 0.1 s and a SuperNode for
messages every 0.5 s, so they often land in that window: measured on the demo, about one reply
per SecAgg+ exchange took 1.1-1.4 s to pull, its upload having ended 0.1-0.3 s after the
coordinator first saw it. Here the first retry comes after :data:`FIRST_RETRY_S`, doubling up to
:data:`RETRY_CAP_S`; Flower's own limits on how long and how often to retry are unchanged, so the
wait stays bounded as before.

How. Flower's receiving loops call ``pull_objects`` with its default backoff;
:func:`quicker_object_retries` rebinds that name in such a module to the same function with
shorter backoff arguments. The ServerApp applies it to its Grid's module (server/app.py), the
SuperNode launcher to the SuperNode's loop (deploy/site/supernode_launcher.py). If a Flower
release moves the call, the rebinding is refused (False) and Flower's backoff applies.
"""

from __future__ import annotations

from functools import partial
from types import ModuleType

from flwr.supercore.inflatable import inflatable_utils

FIRST_RETRY_S = 0.05
RETRY_CAP_S = 1.0


def quicker_object_retries(module: ModuleType) -> bool:
    """Make ``module``'s calls of Flower's ``pull_objects`` retry a missing object sooner; False if it has none."""
    pull = getattr(module, "pull_objects", None)
    if getattr(pull, "func", pull) is not inflatable_utils.pull_objects:
        return False
    module.pull_objects = partial(  # type: ignore[attr-defined]
        inflatable_utils.pull_objects, initial_backoff=FIRST_RETRY_S, backoff_cap=RETRY_CAP_S
    )
    return True
