"""SDN and PBEE: independent pooled heads trained with the mean cross-entropy.

SDN (Kaya, Hong, Dumitraş, ICML 2019; METHODS.md §2): each head is the run's head kind (SDN's
learnable max/avg-pool mix to 4×4 and one linear layer by default; its mixing weight α starts
at 0.5, where the original and the study draw it from U(0, 1)), the loss is the uniform
mean of every exit's cross-entropy, the final exit included, as the study's code computes it
(``methods/early_exit.py``). The original's τ-schedule for the heads' weights is not used, as in
the study. Exit: the first exit whose max-softmax confidence exceeds the threshold; samples that
never exit take the final exit (the study's rule, not the original's most-confident fallback).

PBEE (Zhou et al., NeurIPS 2020; METHODS.md §3): as in the study, SDN's trained model with the
patience rule (exit at the first exit where ``p + 1`` consecutive exits agree, PABEE's
``counter == patience``; p = 0 exits at the first head), so it has no training of its own and
reads SDN's runs from the store. The original's depth-weighted loss is not used, as in the
study.
"""

from __future__ import annotations

from .base import Method, register


class SDN(Method):
    name = "sdn"
    description = ("Shallow-Deep Networks (Kaya et al. 2019): pooled heads, mean cross-entropy, "
                   "exit on max-softmax confidence")


class PBEE(Method):
    name = "pbee"
    description = ("Patience-based early exit (Zhou et al. 2020): SDN's trained model, exit once "
                   "p + 1 consecutive exits agree")
    policy = "patience"
    trains_as = "sdn"


register(SDN())
register(PBEE())
