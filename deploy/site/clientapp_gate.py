"""The site's ClientApp launcher: Flower's ``flwr-clientapp``, refusing any app the site did not approve.

Why here. Flower's own check (``flower-supernode --trusted-entities``) accepts only FABs that the
Flower platform signed and marked ``valid_license``; an app shipped offline with ``flwr run`` has
no such record, so that check refuses everything. Flower executes app code only in the
``flwr-clientapp`` process its SuperExec starts for every message, by command name from ``PATH``
(``TASK_TYPE_TO_COMMAND``). :func:`install_gate` puts a script first on the SuperNode's ``PATH``
under that name, so every ClientApp of the site starts here: the script is the relay of
:mod:`deploy.site.warm_clientapp`, which runs this gate in a task process forked from the site's
warm worker (or, without one, in its own process).

What it does. Flower's ``run_clientapp`` pulls the message, context, run and FAB from the
SuperNode and then installs and imports the FAB. The gate wraps the pull: before anything is
installed or imported, it hashes the FAB content it received and looks the digest up in the
site's approval list (``<cache-path>/approved-apps.json``, see :mod:`deploy.site.approved_apps`). A
refused app gets an error reply (``ErrorCode.INVALID_FAB``, naming the digest) to the coordinator,
a line in ``<cache-path>/app-refusals.jsonl``, and the process ends without reading site data.
An approved bundle that is installed already is not unpacked and re-hashed again for every
message (:func:`installed_once`), and the message's objects are asked for again 0.05 s after one
is found missing, not 1 s (:func:`quicker_message_pull`).

This module must not import the app's packages (``common``, ``client``, ``server``) on the way
to running an approved app: the FAB's copies of those are imported later in this same process.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Protocol

import flwr.supernode.runtime.run_clientapp as runtime
from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.common.config import get_project_dir
from flwr.common.constant import ErrorCode
from flwr.supercore.fab import Fab
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

from deploy.site.approved_apps import ApprovalListError, log_refusal, read_approvals

CLIENTAPP_COMMAND = "flwr-clientapp"  # flwr.supercore.constant.TASK_TYPE_TO_COMMAND[CLIENT_APP]

TaskInput = tuple[Message, Context, Run, Fab]
# The same retry policy as common/object_pulls.py (which this module may not import: see above).
FIRST_RETRY_S = 0.05
RETRY_CAP_S = 1.0
# Approved bundles (by SHA-256 of their content) whose installed folder exists: see installed_once.
_INSTALLED: dict[str, Path] = {}


class AppRefused(Exception):
    """The shipped app is not approved at this site (or its bundle does not match its digest)."""


def check_app(digest: str, announced: str, node_config: Mapping[str, object]) -> None:
    """Pass if ``digest`` (of the FAB content received) is approved here; else :class:`AppRefused`."""
    site = node_config.get("site-name", "this site")
    cache = node_config.get("cache-path")

    def refuse(why: str) -> AppRefused:
        return AppRefused(f"app {digest} refused at {site}: {why}")

    if announced != digest:
        raise refuse(f"the bundle arrived announced as {announced}")
    if not cache:
        raise refuse("the SuperNode has no cache-path in its --node-config, so no approval list")
    try:
        approvals = read_approvals(Path(str(cache)))
    except ApprovalListError as error:
        raise refuse(str(error)) from None
    if approvals is None:
        raise refuse(
            "no app is approved there yet; the site administrator approves one with "
            f"'insite site approve-app APP --cache {cache}'"
        )
    if digest not in {a.digest for a in approvals}:
        raise refuse("not approved by the site administrator ('insite site approve-app')")


class PullTaskInput(Protocol):
    """The type of Flower's ``pull_task_input``, parameter name included (what replaces it must match)."""

    def __call__(self, client: RuntimeHttpClient) -> TaskInput: ...


def gated(pull: PullTaskInput) -> PullTaskInput:
    """Wrap Flower's ``pull_task_input`` so that an unapproved FAB goes no further than the pull."""

    def pull_approved(client: RuntimeHttpClient) -> TaskInput:
        message, context, run, fab = pull(client)
        digest = hashlib.sha256(fab.content).hexdigest()
        try:
            check_app(digest, fab.hash_str, context.node_config)
        except AppRefused as refusal:
            cache = context.node_config.get("cache-path")
            if cache:
                log_refusal(
                    Path(str(cache)),
                    site=context.node_config.get("site-name"),
                    run=run.run_id,
                    fab_id=run.fab_id,
                    digest=digest,
                    reason=str(refusal),
                )
            error = Error(ErrorCode.INVALID_FAB, str(refusal))
            if cache:
                _ledger_refusal(Path(str(cache)), run.run_id, error)
            runtime.push_message(client, Message(error, reply_to=message), context)
            raise
        installed = get_project_dir(run.fab_id, run.fab_version, fab.hash_str)
        if installed.is_dir():
            _INSTALLED[digest] = installed
        return message, context, run, fab

    return pull_approved


class InstallFromFab(Protocol):
    """The type of Flower's ``install_from_fab`` as ``run_clientapp`` calls it."""

    def __call__(self, fab_file: Path | bytes, install_dir: Path | None = None, skip_prompt: bool = False) -> Path: ...


def installed_once(install: InstallFromFab) -> InstallFromFab:
    """Flower's ``install_from_fab``, skipped for an approved bundle that is installed already.

    For every message Flower unpacks the whole bundle into a temporary folder and checks every
    file's hash (~0.1 s here, more for a bigger app), then finds the app installed and keeps the
    installed copy. By then the gate has hashed the bundle and found it approved, and Flower names
    the installed folder by that hash, so an existing folder is this bundle's: Flower itself keeps
    it on the same grounds. A bundle not yet installed is installed by Flower, as before.
    """

    def install_unless_installed(
        fab_file: Path | bytes, install_dir: Path | None = None, skip_prompt: bool = False
    ) -> Path:
        if isinstance(fab_file, bytes) and install_dir is None:
            installed = _INSTALLED.get(hashlib.sha256(fab_file).hexdigest())
            if installed is not None:
                return installed
        return install(fab_file, install_dir, skip_prompt)

    return install_unless_installed


def quicker_message_pull() -> bool:
    """Ask again for a message object not yet at the SuperNode after 0.05 s, not Flower's 1 s; False if Flower moved it.

    Why. The SuperNode makes a message a task as soon as it has pulled the message's header, while
    its objects are still on their way from the SuperLink (``_pull_and_store_message``), and the
    SuperExec may start this process in that window. Flower's ClientApp then finds an object
    missing and waits a whole second before asking again: measured on the demo, about one task in
    seven took 1.0-1.2 s to pull its message (0.02-0.4 s with the first retry at 0.05 s), and under
    SecAgg+ the round waits for its slowest site's pull in both exchanges. Flower's limits on how
    long and how often to retry are unchanged.
    """
    pull = getattr(runtime, "pull_and_inflate_object_from_tree", None)
    if getattr(pull, "func", pull) is not inflatable_utils.pull_and_inflate_object_from_tree:
        return False
    runtime.pull_and_inflate_object_from_tree = partial(
        inflatable_utils.pull_and_inflate_object_from_tree, initial_backoff=FIRST_RETRY_S, backoff_cap=RETRY_CAP_S
    )
    return True


def _ledger_refusal(cache: Path, run_id: int, error: Error) -> None:
    """The refusal leaves the site too: into the egress ledger with it (client/ledger.py).

    Imported here, on the refusal path only: this process ends right after, without importing
    the app, so the app's own copy of ``client`` is never shadowed.
    """
    from flwr.common.serde import error_to_proto  # noqa: PLC0415

    from client.ledger import Ledger  # noqa: PLC0415

    Ledger(cache).append(
        run=run_id,
        round_number=None,
        kind="refused",
        payload=error_to_proto(error).SerializeToString(),
        detail=f"error report instead of a result: {error.reason}",
    )


def main() -> None:
    """Console entry: Flower's ``flwr-clientapp``, same arguments, with the approval check."""
    runtime.pull_task_input = gated(runtime.pull_task_input)
    runtime.install_from_fab = installed_once(runtime.install_from_fab)
    if not quicker_message_pull():
        print("insite: this Flower version pulls a task's message elsewhere; Flower's 1 s retry stays", file=sys.stderr)
    flwr_clientapp()


def install_gate(bin_dir: Path, path: str) -> dict[str, str]:
    """Write ``bin_dir/flwr-clientapp``, the gate's relay; returns the environment that makes it Flower's.

    Start the SuperNode with these variables: its SuperExec then launches the gate for every
    message. ``path`` is the ``PATH`` the SuperNode would otherwise have.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / CLIENTAPP_COMMAND
    script.write_text(
        f"#!{sys.executable}\n"
        "# insite: every ClientApp of this site passes the app-approval gate first, in a task\n"
        "# forked from the site's warm worker (deploy/site/warm_clientapp.py) when there is one\n"
        "from deploy.site.warm_clientapp import relay\n"
        "relay()\n"
    )
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{path}"}
