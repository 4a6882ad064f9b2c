"""On the wire: every byte between sites and coordinator in a real round is TLS.

tcpdump records loopback traffic on the federation's two ports only: the public proxy port
(SuperNode <-> nginx) and the SuperLink's private port (nginx <-> SuperLink, the coordinator's
``flwr`` CLI, the ServerApp). Each TCP stream is reassembled and must parse, from its first byte to
its last, as a sequence of TLS records that opens with a handshake; the planted identifier (in the
run configuration every site fetches) and raw bytes of the initial weights (which every site
downloads) must not occur anywhere in the capture. A control test shows the same analysis flags a
cleartext stream. (A SuperNode's own ClientApp process talks to it on a site-local port: not
between site and coordinator, so not captured here.)
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from common.model import build_model
from common.run_record import RunRecord
from common.settings import RunSettings
from deploy.coordinator.proxy import INSTALL_HINT, nginx_path
from deploy.coordinator.run_supervisor import RunSupervisor
from deploy.coordinator.superlink import SuperLink
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace, provision_demo, start_demo_site
from deploy.host.processes import ManagedProcess, ProcessSet, free_port

TCPDUMP = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin")
pytestmark = [
    pytest.mark.federation,
    pytest.mark.timeout(900),
    pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed ('make system-deps' as root)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="capturing on loopback needs root (CAP_NET_RAW)"),
]

SETTINGS = {
    "rounds": 1,
    "min_sites": 3,
    "round_timeout_s": 300,
    "training": {"local_steps": 2, "patch_size": 16, "batch_size": 1},
    "model": {"channels": [4, 8, 16], "strides": [2, 2]},
}
TLS_CONTENT_TYPES = {20, 21, 22, 23}  # change_cipher_spec, alert, handshake, application_data
TLS_MAX_RECORD = 2**14 + 2048  # RFC 8446 5.2 / RFC 5246 6.2.3 ciphertext limit


# --- capture -------------------------------------------------------------------------------------


def start_capture(processes: ProcessSet, pcap: Path, ports: list[int]) -> ManagedProcess:
    """tcpdump on ``lo`` for ``ports``; returns once it is listening.

    ``--immediate-mode``: packets reach the file as they arrive, so stopping loses none; ``-B``:
    a 64 MB kernel buffer, so a busy CPU does not make it drop any; ``-Z root``: no privilege drop,
    so it can write into the (root-only) test folder.
    """
    port_filter = " or ".join(f"port {port}" for port in ports)
    capture = processes.start(
        "tcpdump",
        [
            TCPDUMP,
            "-i",
            "lo",
            "-s",
            "0",
            "-B",
            "65536",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
            str(pcap),
            f"tcp and ({port_filter})",
        ],
    )
    deadline = time.monotonic() + 20
    while "listening on" not in capture.tail():
        capture.check_alive()
        assert time.monotonic() < deadline, f"tcpdump did not start: {capture.tail()}"
        time.sleep(0.1)
    return capture


def stop_capture(capture: ManagedProcess) -> None:
    capture.stop()
    assert "\n0 packets dropped by kernel" in capture.tail(), capture.tail()


# --- analysis ------------------------------------------------------------------------------------


@dataclass
class Stream:
    """One direction of one TCP connection, reassembled by sequence number."""

    initiator: bool  # sent the SYN
    isn: int | None = None
    segments: dict[int, bytes] = field(default_factory=dict)

    def data(self) -> bytes:
        assert self.isn is not None or not self.segments, "stream without SYN: capture began late"
        out = bytearray()
        for seq, payload in sorted(((s - self.isn - 1) % 2**32, p) for s, p in self.segments.items()):
            assert seq <= len(out), f"gap in the capture at byte {len(out)}"
            out += payload[len(out) - seq :]
        return bytes(out)


def read_streams(pcap: Path) -> dict[tuple, Stream]:
    """(src port, dst port, connection start) -> Stream, from an Ethernet-framed IPv4 pcap."""
    raw = pcap.read_bytes()
    magic, _, _, _, _, snaplen, linktype = struct.unpack("<IHHiIII", raw[:24])
    assert magic in (0xA1B2C3D4, 0xA1B23C4D) and linktype == 1, (hex(magic), linktype)
    streams: dict[tuple, Stream] = {}
    connection_of: dict[tuple, int] = {}
    position = 24
    while position < len(raw):
        _, _, captured, original = struct.unpack("<IIII", raw[position : position + 16])
        packet = raw[position + 16 : position + 16 + captured]
        position += 16 + captured
        assert captured == original, "packet truncated by the snapshot length"
        if struct.unpack("!H", packet[12:14])[0] != 0x0800:
            continue
        ip = packet[14:]
        ip_header = (ip[0] & 0x0F) * 4
        ip_length = struct.unpack("!H", ip[2:4])[0]
        if ip[9] != 6:
            continue
        tcp = ip[ip_header:ip_length]
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        flags = tcp[13]
        payload = tcp[(tcp[12] >> 4) * 4 :]
        pair = (min(sport, dport), max(sport, dport))
        if flags & 0x02 and not flags & 0x10:  # SYN: a new connection on this port pair
            connection_of[pair] = connection_of.get(pair, -1) + 1
        key = (sport, dport, connection_of.get(pair, 0))
        stream = streams.setdefault(key, Stream(initiator=bool(flags & 0x02 and not flags & 0x10)))
        if flags & 0x02:
            stream.isn = seq
        if payload:
            stream.segments.setdefault(seq, payload)
    return streams


def tls_problem(data: bytes, initiator: bool) -> str | None:
    """Why ``data`` is not a TLS record stream, or None. A last record cut short by the end of
    the capture is fine; anything that is not a record header where one must start is not."""
    if not data:
        return None
    hello = 1 if initiator else 2
    if data[0] != 22 or len(data) > 5 and data[5] != hello:
        return f"does not open with a TLS {'Client' if initiator else 'Server'}Hello"
    position = 0
    while position + 5 <= len(data):
        kind, major, minor, length = (
            data[position],
            data[position + 1],
            data[position + 2],
            struct.unpack("!H", data[position + 3 : position + 5])[0],
        )
        if kind not in TLS_CONTENT_TYPES or major != 3 or minor > 4 or length > TLS_MAX_RECORD:
            return f"non-TLS bytes at offset {position}: {data[position : position + 40]!r}"
        position += 5 + length
    return None


def weight_needles(settings: RunSettings, count: int = 6, width: int = 48) -> list[bytes]:
    """Raw float32 bytes from the initial weights the ServerApp sends (same seed, same factory)."""
    torch.manual_seed(settings.seed)
    tensors = sorted(build_model(settings.model).state_dict().values(), key=lambda t: -t.numel())
    needles = []
    for tensor in tensors[:count]:
        flat = tensor.detach().to(torch.float32).contiguous().numpy().tobytes()
        middle = len(flat) // 2
        needles.append(flat[middle : middle + width])
    return needles


def serialised_initial_weights(settings: RunSettings) -> bytes:
    """The initial weights as Flower serialises them into a message's objects (what sites pull)."""
    from flwr.app import ArrayRecord
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    torch.manual_seed(settings.seed)
    record = ArrayRecord(build_model(settings.model).state_dict())
    return b"".join(obj.deflate() for obj in get_all_nested_objects(record).values())


def audit(streams: dict[tuple, Stream], needles: list[bytes]) -> list[str]:
    """Every problem found: a stream that is not TLS, or a needle found in clear."""
    problems = []
    for (sport, dport, n), stream in streams.items():
        data = stream.data()
        if (problem := tls_problem(data, stream.initiator)) is not None:
            problems.append(f"{sport}->{dport} #{n}: {problem}")
        problems += [f"{sport}->{dport} #{n}: {needle[:16]!r}... in clear" for needle in needles if needle in data]
    return problems


# --- tests ---------------------------------------------------------------------------------------


def test_audit_flags_cleartext(tmp_path):
    """Control: the same capture and analysis catch a plaintext stream carrying a needle."""
    needle = f"PLANTED-{uuid.uuid4()}".encode()
    port = free_port()
    with (
        ProcessSet(tmp_path / "logs", {"PATH": os.environ["PATH"]}) as processes,
        socket.create_server(("127.0.0.1", port)) as server,
    ):
        capture = start_capture(processes, tmp_path / "clear.pcap", [port])
        with socket.create_connection(("127.0.0.1", port)) as client:
            peer, _ = server.accept()
            client.sendall(b"POST /v1/fleet/push-messages HTTP/1.1\r\n\r\n" + needle)
            assert peer.recv(4096)
            peer.close()
        time.sleep(0.5)
        stop_capture(capture)
    problems = audit(read_streams(tmp_path / "clear.pcap"), [needle])
    assert any("does not open with a TLS ClientHello" in p for p in problems), problems
    assert any("in clear" in p for p in problems), problems


@pytest.mark.slow  # one SecAgg+ round of 3 sites: 150 s measured on the shared 2-core machine
@pytest.mark.skipif(nginx_path() is None, reason=f"nginx not installed; {INSTALL_HINT}")
def test_a_real_round_is_tls_on_every_byte(tmp_path):
    space = Workspace(tmp_path / "ws")
    for profile in DEMO_SITES:
        write_site(profile, space.site_dir(profile.name) / "data", 2, 1, size=32)
    provision_demo(space, [p.name for p in DEMO_SITES])
    settings = RunSettings.model_validate(SETTINGS)
    marker = f"PLANTED-{uuid.uuid4().hex}"
    run_dir = tmp_path / f"run-{marker}"  # travels in the run config every site fetches
    RunRecord(run_dir).create("wire-test", settings, transport={"tls": True})
    pcap = tmp_path / "round.pcap"
    with ProcessSet(space.logs, {}) as processes:
        fed = SuperLink(space.root, space.consortium, processes)
        fed.start()
        capture = start_capture(processes, pcap, [fed.port, fed.private_port])
        for name in space.site_names():
            site = space.site(name, 1)
            fed.register_key(name, site.public_key)
            start_demo_site(fed, site, space.root)
        record = RunSupervisor(fed, run_dir, lambda row: None, lambda event: None, 600).run()
        stop_capture(capture)
    assert record["status"] == "completed"

    streams = read_streams(pcap)
    weights = weight_needles(settings)
    serialised = serialised_initial_weights(settings)
    assert all(needle in serialised for needle in weights)  # in clear, they would show
    assert audit(streams, [marker.encode(), *weights]) == []
    public = sum(len(s.data()) for (sport, dport, _), s in streams.items() if fed.port in (sport, dport))
    private = sum(len(s.data()) for (sport, dport, _), s in streams.items() if fed.private_port in (sport, dport))
    model_bytes = sum(t.numel() * 4 for t in build_model(settings.model).state_dict().values())
    # the model went to and came back from each of the 3 sites through the captured proxy port
    assert public > 6 * model_bytes and private > 6 * model_bytes, (public, private, model_bytes)
