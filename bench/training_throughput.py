"""Local training throughput: the site's training inside the ClientApp beside a bare MONAI loop.

Both sides train the same UNet (the run config's model) on the same synthetic site, with the
same batch and patch size, DiceCE and Adam, on the same thread count, in one process and
interleaved (ClientApp, bare, ClientApp, bare, ...) so machine noise hits both alike.

- "ClientApp": the project's real ``client.app.app`` called with a real Flower train Message and
  Context (the code a SuperNode's ClientApp process runs), timed around the whole call: reading
  the site's cache, building the model, loading/saving Adam state, training, packing the reply.
  Its own reported pure-training rate is printed beside it.
- "bare MONAI": a plain loop written here without any project code: MONAI CacheDataset in
  memory, RandCropByPosNegLabeld, UNet, DiceCELoss, Adam. It runs under the allocator setting a
  site's training runs under (``client.host_memory.kept_while_computing``, which the ClientApp
  sets itself): in one process that setting is shared, so both sides train with it and the
  ratio measures the app, not the allocator.

``--device`` (auto | cuda | cpu, default cpu) goes to the ClientApp as the site's node config, and
the bare loop trains on what the project's ``select_compute`` picks for it, with the same autocast
and gradient-scaler rule: otherwise a GPU ClientApp would be measured against a CPU fp32 loop.
Both sides print the device and precision they trained with (the ClientApp's from its own log).

    python -m bench.training_throughput [--config configs/federation.toml] [--repeats 3] [--device auto]

Reported: steps/s of each and the ratio ClientApp / bare (target >= 0.95x, issue 14).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Literal, cast

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict, UserConfigValue
from flwr.supercore.task_identity import TaskIdentity
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    RandCropByPosNegLabeld,
)

from client.app import app as client_app
from client.cases import discover_cases
from client.host_memory import kept_while_computing
from client.site import SiteContext
from common.device import Compute, select_compute
from common.model import build_model
from common.protocol import RUN_KEY
from common.settings import RunSettings, load_run_settings, to_run_config
from configs import shipped
from deploy.demo.synthetic_sites import DEMO_SITES, write_site

BENCH_RUN_KEY = "b0" * 16


def clientapp_round(site: SiteContext, settings: RunSettings, run_dir: Path, round_number: int) -> tuple[float, float]:
    """One real train message through the ClientApp: (wall steps/s, reported training steps/s)."""
    weights = build_model(settings.model).state_dict()
    # The run key names the site's between-round state (FedDyn's), as a coordinator's message carries it.
    config = ConfigRecord({"server-round": round_number, RUN_KEY: BENCH_RUN_KEY})
    content = RecordDict({"arrays": ArrayRecord(weights), "config": config})
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 4242, 0, 0  # as the ServerApp's
    message = Message(content, dst_node_id=1, message_type="train")
    context = Context(
        run_id=4242,
        node_id=1,
        node_config=_node_config(site),
        state=RecordDict(),
        # copied: Context wants a dict of any UserConfigValue, to_run_config's is narrower (dict is invariant)
        run_config={**to_run_config(settings, run_dir, 0, None)},
    )
    started = time.perf_counter()
    reply = client_app(message, context)
    wall = time.perf_counter() - started
    if reply.has_error():
        raise SystemExit(f"ClientApp failed: {reply.error.reason}")
    steps = settings.training.local_steps
    # cast: the ClientApp reports a float; a MetricRecord types any metric value
    return steps / wall, float(cast(float, reply.content.metric_records["metrics"]["train-steps-per-s"]))


def _node_config(site: SiteContext) -> dict[str, UserConfigValue]:
    return {
        "site-name": site.name,
        "data-path": str(site.data_path),
        "cache-path": str(site.cache_path),
        "device": site.device,
        "threads": site.threads,
    }


class _ClientAppLog(logging.Handler):
    """Keeps the ClientApp's per-round training lines: they name the device and precision it used."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def bare_monai_round(data_path: Path, settings: RunSettings, compute: Compute) -> tuple[float, float]:
    """The same training as a plain MONAI loop: (steps/s with its set-up, training loop only).

    It trains on ``compute`` (the ClientApp's device choice) with the same autocast and gradient
    scaler as the project's loop, so device and precision are not what the comparison measures.
    """
    started = time.perf_counter()
    keys = ("image", "label")
    training = settings.training
    files = [
        {"image": str(c.image), "label": str(c.label)} for c in discover_cases("bench", data_path) if c.split == "train"
    ]
    transform = Compose(
        [
            LoadImaged(keys=keys, image_only=True),
            EnsureChannelFirstd(keys=keys),
            NormalizeIntensityd(keys="image"),
            RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=(training.patch_size,) * 3,
                pos=1,
                neg=1,
                num_samples=1,
                allow_smaller=True,
            ),
        ]
    )
    loader = DataLoader(CacheDataset(files, transform, progress=False), batch_size=training.batch_size, shuffle=True)
    net = settings.model
    model = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=net.out_channels,
        channels=tuple(net.channels),
        strides=tuple(net.strides),
        num_res_units=net.num_res_units,
    ).to(compute.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=training.learning_rate)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    scaler = torch.amp.GradScaler(compute.device.type) if compute.grad_scaling else None
    model.train()
    done = 0
    loop_started = time.perf_counter()
    while done < training.local_steps:
        for batch in loader:
            image = batch["image"].to(compute.device, non_blocking=True)
            label = batch["label"].to(compute.device, non_blocking=True)
            optimizer.zero_grad()
            with compute.autocast():
                loss = loss_fn(model(image), label)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            done += 1
            if done == training.local_steps:
                break
    if compute.device.type == "cuda":
        torch.cuda.synchronize()  # kernels are queued: the clock stops when they have run
    finished = time.perf_counter()
    return done / (finished - started), done / (finished - loop_started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=shipped("federation.toml"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the demo gives each of its 3 sites one core's share)"
    )
    parser.add_argument("--train-cases", type=int, default=48)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="cpu",
        help="the site's device (node config 'device'); the bare loop uses what select_compute picks for it",
    )
    args = parser.parse_args()
    settings = load_run_settings(args.config)
    torch.set_num_threads(args.threads)
    device: Literal["auto", "cuda", "cpu"] = args.device
    compute = select_compute(device, settings.training.mixed_precision)
    app_log = _ClientAppLog()
    round_log = logging.getLogger("client.local_round")
    round_log.addHandler(app_log)
    round_log.setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_site(DEMO_SITES[0], root / "data", args.train_cases, 1, args.size, 0)
        site = SiteContext("bench", root / "data", root / "cache", device, args.threads)
        clientapp_round(site, settings, root / "run", 0)  # warm the site's preprocessing cache (and CUDA)
        print(f"ClientApp  (device={device!r}): {app_log.lines[-1] if app_log.lines else 'no training log line'}")
        print(f"bare MONAI (select_compute({device!r})): {compute.describe()}", flush=True)
        app_wall, app_inner, bare, bare_inner = [], [], [], []
        for repeat in range(1, args.repeats + 1):
            wall, inner = clientapp_round(site, settings, root / "run", repeat)
            app_wall.append(wall)
            app_inner.append(inner)
            with kept_while_computing():
                total, loop = bare_monai_round(root / "data", settings, compute)
            bare.append(total)
            bare_inner.append(loop)
            print(
                f"repeat {repeat}: ClientApp {wall:.3f} steps/s (training loop {inner:.3f}), "
                f"bare MONAI {total:.3f} steps/s (training loop {loop:.3f})",
                flush=True,
            )
    ratio = statistics.median(w / b for w, b in zip(app_wall, bare, strict=True))
    loop_ratio = statistics.median(a / b for a, b in zip(app_inner, bare_inner, strict=True))
    print(
        f"\n{settings.training.local_steps} steps, batch {settings.training.batch_size}, "
        f"patch {settings.training.patch_size}^3, {args.threads} thread(s), median of {args.repeats}, "
        f"--device {device} ({compute.describe()}):"
    )
    print(f"  ClientApp (whole message)  {statistics.median(app_wall):.3f} steps/s")
    print(f"  ClientApp (training loop)  {statistics.median(app_inner):.3f} steps/s")
    print(f"  bare MONAI (with set-up)   {statistics.median(bare):.3f} steps/s")
    print(f"  bare MONAI (training loop) {statistics.median(bare_inner):.3f} steps/s")
    print(
        f"  ratio ClientApp / bare     {ratio:.2f}x whole round, {loop_ratio:.2f}x training loop "
        "(target >= 0.95x, issue 14)"
    )


if __name__ == "__main__":
    main()
