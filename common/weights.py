"""Model weights as Flower records, checked on the way in.

A reply whose tensors do not match the model (a missing or extra name, another shape) is refused
with a message naming the tensor, instead of surfacing as a cryptic ``load_state_dict`` error
halfway through a round.
"""

from __future__ import annotations

import hashlib

import torch
from flwr.app import ArrayRecord

from common.errors import FederationError


def to_arrays(model: torch.nn.Module) -> ArrayRecord:
    return ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items()})


def check_compatible(expected: dict[str, torch.Tensor], received: dict[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(expected) - set(received))
    extra = sorted(set(received) - set(expected))
    if missing or extra:
        raise FederationError(
            f"{source}: weights do not match the model (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name, tensor in expected.items():
        if tuple(received[name].shape) != tuple(tensor.shape):
            raise FederationError(
                f"{source}: tensor '{name}' has shape "
                f"{tuple(received[name].shape)}, model expects {tuple(tensor.shape)}"
            )


def load_arrays(model: torch.nn.Module, arrays: ArrayRecord, source: str) -> None:
    """Load ``arrays`` into ``model`` after checking every name and shape."""
    received = arrays.to_torch_state_dict()
    check_compatible(model.state_dict(), received, source)
    model.load_state_dict(received)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names and raw bytes in name order: equal digests mean identical weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
