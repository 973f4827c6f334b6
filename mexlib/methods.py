"""Early-exit methods: what each trains its exits with and how it decides to exit.

A method supplies the loss over all exits' logits and the exit policy used at inference
(STUDY.md §4). Methods that need their own heads (GPF, ZTW) or per-sample loss weights (L2W)
add a head kind and override :meth:`Method.loss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_entropy_per_exit(logits: list[Tensor], labels: Tensor) -> Tensor:
    """Each exit's mean cross-entropy, ``[num_exits]``, computed in float32."""
    return torch.stack([F.cross_entropy(out.float(), labels) for out in logits])


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    policy: str  # the exit policy of mexlib.evaluate used at inference

    def exit_losses(self, logits: list[Tensor], labels: Tensor) -> Tensor:
        """Each exit's loss, ``[num_exits]``: its mean cross-entropy."""
        return cross_entropy_per_exit(logits, labels)

    def combine(self, exit_losses: Tensor) -> Tensor:
        """The training loss: the plain mean over exits, the final one included (as the
        reference code does for SDN and PBEE)."""
        return exit_losses.mean()


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("sdn", "Shallow-Deep Networks (Kaya et al. 2019): pooled heads, mean "
                      "cross-entropy, exit on max-softmax confidence", "confidence"),
        Method("pbee", "Patience-based early exit (Zhou et al. 2020): SDN's heads and loss, exit "
                       "once consecutive exits agree", "patience"),
    ]
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None
