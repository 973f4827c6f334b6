"""Backbones with per-block features, internal classifiers and the multi-exit wrapper."""

from .architectures import ARCHITECTURES, FAMILY_LAYOUTS, ArchSpec, arch_spec
from .backbones import Backbone, FeatureInfo, count_parameters
from .heads import HEAD_KINDS, build_head, check_head, default_head_kind
from .msdnet import MSDNet
from .multi_exit import ContextHead, ExitContext, MultiExitModel, check_exit_placement, exit_logits

__all__ = ["ARCHITECTURES", "ArchSpec", "Backbone", "ContextHead", "ExitContext", "FAMILY_LAYOUTS", "FeatureInfo",
           "HEAD_KINDS", "MSDNet", "MultiExitModel", "arch_spec", "build_head", "check_exit_placement", "check_head",
           "count_parameters", "default_head_kind", "exit_logits"]
