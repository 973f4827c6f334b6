"""What the analyses read: fixed samples of a run's data, models at recorded snapshots, and
results kept beside the run store so a notebook run again reads them instead of recomputing.

- :func:`fixed_sample`: ``size`` images of a split drawn once with their own seed (the same
  images for every run and regime compared), normalised as the run saw them, without
  augmentation, in batches.
- :func:`run_data`: a run's data on the store's device; :func:`model_at`: a run's model with a snapshot's weights (:class:`~.recording.SnapshotRecorder`).
- :func:`cached`: ``compute()``'s result kept in the run store (:meth:`RunStore.cached`), keyed
  by ``inputs`` (run keys, parameters) and the source of the code that computed it (``compute``'s
  module, the analyses'), so a change of either computes afresh.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..config import RunConfig
from ..store import RunStore
from ..train import DeviceData, build_model

def fixed_sample(data: DeviceData, split: str, size: int, seed: int = 0,
                 batch_size: int = 256) -> list[tuple[Tensor, Tensor]]:
    """``size`` images of ``split`` (all if fewer), drawn with ``seed``, as normalised
    ``(images, labels)`` batches of at most ``batch_size``, in the model's memory format."""
    if size < 1 or batch_size < 1:
        raise ValueError(f"size and batch_size must be positive, got {size} and {batch_size}")
    images, labels = data.split(split)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:size]
    order = order.to(labels.device)
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        x = data.normalize(images[rows]).contiguous(memory_format=data.memory_format)
        batches.append((x, labels[rows]))
    return batches


def joined(batches: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The batches as one ``(images, labels)`` batch."""
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def run_data(store: RunStore, config: RunConfig) -> DeviceData:
    """``config``'s data on the store's device, as its runs trained on it (shared with them)."""
    return store.device_data(config)


def model_at(config: RunConfig | dict, state: dict, device: str | torch.device = "cpu"):
    """``config``'s model with ``state`` (a snapshot's or a stored run's weights) on ``device``,
    in eval mode."""
    model = build_model(config if isinstance(config, RunConfig) else RunConfig.from_dict(config), device)
    model.load_state_dict(state)
    return model.eval()


def cached(store: RunStore, name: str, inputs: dict[str, Any], compute: Callable[[], Any], code=()):
    """``compute()``'s result kept in the store (:meth:`mexlib.store.RunStore.cached`): keyed by
    ``inputs``, the source of ``compute`` and of ``code`` and the analyses' code."""
    return store.cached(name, inputs, compute, code)


__all__ = ["cached", "fixed_sample", "joined", "model_at", "run_data"]
