"""Payload: a round's seconds for models of ~1M, 20M and 100M parameters, beside a raw TLS copy of the bytes.

For each size, a real loopback federation (SuperLink behind the proxy, three SuperNodes, TLS, node
authentication, plain aggregation, the demo's UNet widened to the size) trains one step per round
on tiny volumes, so the round is transfer and machinery. Beside it, in the same invocation, the
same bytes a round moves (the model to each of 3 sites and 3 updates back) are copied once over a
plain TLS socket on loopback with the consortium's certificate: the cost of the bytes themselves.
Also reported: the machine's peak memory in use during the federation, above what was in use before.

    python -m bench.payload [--channels 16 66 148] [--rounds 3]
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import threading
import time
from pathlib import Path

from bench.round_overhead import federation
from common.background import Background
from common.model import build_model
from common.settings import RunSettings
from deploy.demo.workspace import Workspace, provision_demo
from deploy.host.processes import LOOPBACK

SITES = 3
CHUNK = 1024 * 1024
MB = 1e6


def settings_for(channels: int, rounds: int) -> RunSettings:
    return RunSettings.model_validate(
        {
            "rounds": rounds,
            "min_sites": SITES,
            "round_timeout_s": 1800,
            "aggregation": {"mode": "plain"},
            "faults": {"max_update_norm": 1e12},
            "training": {"local_steps": 1, "batch_size": 1, "patch_size": 16, "mixed_precision": False},
            "model": {"channels": [channels, 2 * channels, 4 * channels, 8 * channels], "strides": [2, 2, 2]},
        }
    )


def raw_tls_copy(root: Path, nbytes: int) -> float:
    """Seconds to send ``nbytes`` over one TLS connection on loopback (the consortium's own certificate)."""
    space = Workspace(root)
    provision_demo(space, [])
    files = space.consortium
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(files.server_cert, files.server_key)
    client_context = ssl.create_default_context(cafile=str(files.ca_cert))
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]
    received = 0

    def receive() -> None:
        nonlocal received
        connection, _ = listener.accept()
        with server_context.wrap_socket(connection, server_side=True) as tls:
            while received < nbytes and (chunk := tls.recv(CHUNK)):
                received += len(chunk)
            tls.sendall(b"ok")  # the sender stops its clock on this, having read everything sent to it

    receiver = threading.Thread(target=receive)
    receiver.start()
    block = bytes(CHUNK)
    started = time.perf_counter()
    with (
        socket.create_connection((LOOPBACK, port)) as raw,
        client_context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        sent = 0
        while sent < nbytes:
            tls.sendall(block[: min(CHUNK, nbytes - sent)])
            sent += min(CHUNK, nbytes - sent)
        acknowledged = tls.recv(2)
        seconds = time.perf_counter() - started
    receiver.join(timeout=600)
    listener.close()
    assert received == nbytes and acknowledged == b"ok", f"raw TLS copy received {received} of {nbytes} bytes"
    return seconds


class MemoryInUse:
    """Peak of the machine's memory in use (MemTotal - MemAvailable) while :meth:`watch` runs, above the start."""

    def __init__(self) -> None:
        self.start = self.peak = self._in_use()

    @staticmethod
    def _in_use() -> int:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return (int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])) * 1024

    def watch(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            self.peak = max(self.peak, self._in_use())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 66, 148], help="first UNet level's channels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/insite-payload"))
    args = parser.parse_args()
    lines = []
    for channels in args.channels:
        settings = settings_for(channels, args.rounds)
        model = build_model(settings.model)
        parameters = sum(p.numel() for p in model.state_dict().values())
        model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        del model
        print(f"{parameters / 1e6:.1f}M parameters ({model_bytes / MB:.0f} MB)", flush=True)
        memory = MemoryInUse()
        with Background("memory-in-use", memory.watch):
            rows = federation(args.work / f"federation-{channels}", settings, 2, 1, 32)
        round_bytes = 2 * SITES * model_bytes
        copy_s = raw_tls_copy(args.work / f"tls-{channels}", round_bytes)
        later = rows[1:] or rows
        wall = statistics.median(row["wall_s"] for row in later)
        training = statistics.median(max(s["train_seconds"] for s in row["sites"].values()) for row in later)
        lines.append(
            f"| {parameters / 1e6:.1f}M | {model_bytes / MB:.0f} MB | {wall:.1f} s | {training:.1f} s | "
            f"{round_bytes / MB / max(wall - training, 1e-9):.0f} MB/s | "
            f"{copy_s:.2f} s ({round_bytes / MB / copy_s:.0f} MB/s) | "
            f"{(memory.peak - memory.start) / 1e9:.1f} GB |"
        )
    print(
        f"\nround wall time (median of rounds 2-{args.rounds}), {SITES} sites; a round moves the model to each "
        "site and each update back"
    )
    print(
        "| parameters | model | round wall | slowest training | round bytes / (wall - training) "
        "| raw TLS copy of the round's bytes | peak memory in use |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
