"""What the coordinator received under SecAgg+ must hold no site's update, whole or as raw bytes."""

from __future__ import annotations

import numpy as np
import torch


def assert_no_update_received(received: list, updates: dict[str, dict[str, torch.Tensor]]) -> None:
    """``received``: every array and byte payload of the replies; ``updates``: each site's plaintext model."""
    assert received, "the recording grid saw no replies"
    blobs = [item for item in received if isinstance(item, bytes)]
    assert blobs, "no masked vector was recorded"
    arrays = [item for item in received if isinstance(item, np.ndarray)]
    for site, update in updates.items():
        largest = max(update.values(), key=lambda t: t.numel()).numpy()
        assert not any(largest.tobytes()[:256] in blob for blob in blobs), f"{site}'s update in clear"
        for name, tensor in update.items():
            values = tensor.numpy()
            for array in arrays:
                if array.size == values.size:
                    assert not np.allclose(array.reshape(values.shape), values, atol=1e-6), (
                        f"the coordinator received {site}'s own '{name}'"
                    )
