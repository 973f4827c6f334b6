"""Backbones with per-block features, internal classifiers and the multi-exit wrapper."""

from .backbones import ARCHITECTURES, ArchSpec, Backbone, FeatureInfo, arch_spec, count_parameters
from .heads import HEAD_KINDS, build_head, check_head, default_head_kind
from .msdnet import MSDNet
from .multi_exit import ContextHead, ExitContext, MultiExitModel, check_exit_placement, exit_logits

__all__ = ["ARCHITECTURES", "ArchSpec", "Backbone", "ContextHead", "ExitContext", "FeatureInfo", "HEAD_KINDS",
           "MSDNet", "MultiExitModel", "arch_spec", "build_head", "check_exit_placement", "check_head",
           "count_parameters",
           "default_head_kind", "exit_logits"]
