"""Training-dynamics analyses on stored runs (STUDY.md §5): loss landscapes and mode
connectivity (:mod:`.landscape`), numerical rank and mutual information of the blocks'
representations (:mod:`.representations`), and what training itself must record for them
(:mod:`.recording`: per-exit gradients, per-epoch snapshots), without changing the run, and
what they read (:mod:`.inputs`: fixed samples, models at snapshots, cached results)."""

from .inputs import cached, fixed_sample, joined, model_at, run_data
from .landscape import (SCOPES, barrier, exit_losses, filter_normalized_direction, interpolate, loss_surface,
                        recompute_batchnorm)
from .recording import GradientRecorder, SnapshotRecorder, block_parameter_counts, recorded
from .representations import (block_features, effective_rank, effective_rank_interval, gaussian_mixture_information,
                              mutual_information, numerical_rank, principal_components, rank_profile, singular_values)

__all__ = ["GradientRecorder", "SCOPES", "SnapshotRecorder", "barrier", "block_features", "block_parameter_counts", "cached",
           "effective_rank", "effective_rank_interval", "fixed_sample", "joined", "model_at", "run_data", "exit_losses", "filter_normalized_direction",
           "gaussian_mixture_information", "interpolate", "loss_surface", "mutual_information", "numerical_rank",
           "principal_components", "rank_profile", "recompute_batchnorm", "recorded", "singular_values"]
