"""Early-exit methods: heads, loss, extra training stages and exit policy behind one interface
(:class:`Method`, in :mod:`mexlib.methods.base`). Each method is one module that registers
itself: SDN and PBEE (:mod:`.sdn`), GPF (:mod:`.gpf`), ZTW (:mod:`.ztw`), L2W (:mod:`.l2w`); the loss-weighting variants of SDN
for the ablations (:mod:`.weighting`).
"""

from .base import (METHODS, Method, Stage, StepRule, TrainingDiverged, cross_entropy_per_exit,
                   cross_entropy_per_sample, get_method, register, training_method)
from . import sdn, gpf, ztw, l2w, weighting  # noqa: E402,F401  (each registers its methods)

__all__ = ["METHODS", "Method", "Stage", "StepRule", "TrainingDiverged", "cross_entropy_per_exit", "cross_entropy_per_sample",
           "get_method", "register", "training_method"]
