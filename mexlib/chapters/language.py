"""Chapter 08 · Language: the regimes on a pretrained text encoder (``notebooks/08_language``).

:func:`run` compares the regimes on the profile's text encoder and data set (cpu: MiniLM on
WordNet's supersenses; paper: BERT-Base on 20 Newsgroups, the paper's language row; smoke: a
tiny random BERT), with SDN's method: a linear head after every layer on what the encoder's
pretraining trained ([CLS] for BERT, the mean of the tokens for MiniLM), the encoder's classifier
reading the last layer the same way as the last exit, the max-softmax rule. Here "disjoint" is how early exits are
most often added in practice: the pretrained encoder fine-tuned with its own classifier, then
frozen, and the heads fitted on it. Beside the regimes stand the equal-compute controls of the
regimes chapter (:func:`mexlib.study.equal_compute_controls`): mixed fine-tunes the encoder in
both of its phases, so joint trained as long and disjoint on an encoder fine-tuned as long say
whether mixed's lead is its schedule or its extra training. It returns the budget tables
(thresholds picked on test and fixed on validation, and every seed's values), each exit's
accuracy, the final exit's regimes compared seed by seed, and findings set beside the paper's
claims for BERT: joint training costs the final exit of a large pretrained model accuracy (about
−1.4 points against disjoint on 20 Newsgroups), while mixed stays best or tied.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import torch

from .. import plots, verdicts
from ..config import profile_settings
from ..evaluate import format_budget_table
from ..data import dataset_spec
from ..models import arch_spec
from ..models.encoders import tokenize
from ..text_data import load_text_dataset
from ..settings import SETTINGS
from ..stats import compare
from ..study import CONTROLS, compare_regimes
from .base import Result, records_stale_runs
from .regimes import wall_table

NOTEBOOK = "08_language"
TITLE = "Language: early exits on a pretrained text encoder"
TABLES = ("language_exit_costs", "language_budget_table", "language_budget_table_raw",
          "language_budget_table_validation", "language_budget_table_seeds", "language_per_exit_accuracy",
          "language_final_exit", "language_token_spread", "language_wall_times", "language_findings")
#: The paper's language row (Table 1, 100 % budget) that the findings quote.
PAPER_SETTING = "bert-base-20newsgroups"
#: The final exit's comparisons: (a, b) for a − b, seed by seed; with the controls also
#: :func:`final_pairs`'s.
FINAL_PAIRS = (("joint", "disjoint"), ("mixed", "disjoint"), ("mixed", "joint"))


@records_stale_runs
def run(profile: str = "cpu", seeds=None, regimes=("disjoint", "joint", "mixed"), arch: str | None = None,
        dataset: str | None = None, controls: bool = True, device: str = "auto", executor: str = "inline",
        workers: int = 2, **overrides) -> Result:
    """The regimes on ``arch`` (None: the profile's text encoder) and ``dataset`` (None: the
    profile's text data set) for ``seeds`` (None: the profile's), with the equal-compute
    controls unless ``controls`` is False (they need ``"mixed"`` among the regimes)."""
    settings = profile_settings(profile)
    arch, dataset = arch or settings.text_arch, dataset or settings.text_dataset
    study = compare_regimes(profile, seeds=seeds, regimes=list(regimes), device=device, progress=settings.progress,
                            controls=controls and "mixed" in regimes, executor=executor, workers=workers,
                            arch=arch, dataset=dataset, **overrides)
    regimes = list(dict.fromkeys(run.values["regime"] for run in study.runs))  # the controls' labels too
    controls = {kind: run.values["regime"] for run in study.runs if run.control  # the regime each stands for
                for kind in CONTROLS if run.values["regime"].startswith(f"{kind},")}
    result = Result(profile, "language_findings", FIGURES, data=dict(study=study, arch=arch, dataset=dataset))
    result.add("language_exit_costs", study.costs.table())
    table = study.budget_table()
    result.data["budget"] = table
    result.add("language_budget_table", format_budget_table(table))
    result.add("language_budget_table_raw", table, percent=True)
    result.add_paired_tables("language", study)
    exits = study.per_exit_accuracy()
    result.data["exits"] = exits
    per_exit = exits.groupby(["regime", "exit"], sort=False)["accuracy"].agg(["mean", "std"]).unstack("exit")
    per_exit.columns = [f"exit {k} {stat}" for stat, k in per_exit.columns]
    result.add("language_per_exit_accuracy", per_exit[sorted(per_exit.columns, key=_exit_order)], percent=True)
    final = final_exit_table(exits, regimes, controls)
    result.add("language_final_exit", final, percent=["difference", "low", "high"])
    spread = token_spread(study.runs[0].config)
    result.add("language_token_spread", spread)
    result.add("language_wall_times", wall_table(study))
    wall = study.wall_times()
    result.data["minutes"] = (wall.groupby("run", sort=False)["seconds"].sum() / 60).rename("training minutes")
    first = study.runs[0].config
    result.findings.append(("What the heads read", _spread_findings(spread, first.head, first.final_head)))
    result.findings.append(("Regimes", verdicts.regime_findings(study)))
    result.findings.append(("Beside the paper's BERT", _paper_findings(final, controls)))
    return result


def _exit_order(column: str) -> tuple[int, str]:
    _, k, stat = column.split()
    return int(k), stat


def final_pairs(controls: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """:data:`FINAL_PAIRS`, then for the equal-compute controls (``controls``: the regime each
    control stands for → its label) mixed against each, and the long joint against the disjoint
    of the long backbone: the paper's question, "does joint hurt the final exit?", at equal compute."""
    controls = controls or {}
    pairs = list(FINAL_PAIRS) + [("mixed", controls[k]) for k in ("joint", "disjoint") if k in controls]
    if {"joint", "disjoint"} <= set(controls):
        pairs.append((controls["joint"], controls["disjoint"]))
    return pairs


def final_exit_table(exits: pd.DataFrame, regimes, controls: dict[str, str] | None = None) -> pd.DataFrame:
    """The final exit's accuracy, regime against regime seed by seed (:func:`final_pairs` of
    ``controls``, where both were trained): the mean difference (a fraction), its 95 % interval,
    n and the verdict."""
    last = exits[exits["exit"] == exits["exit"].max()]
    per_seed = {regime: dict(zip(part["seed"], part["accuracy"])) for regime, part in last.groupby("regime")}
    rows = []
    for a, b in final_pairs(controls):
        if a in regimes and b in regimes:
            comparison = compare(per_seed[a], per_seed[b])
            rows.append(dict(comparison=f"{a} − {b}", difference=comparison.difference, low=comparison.low,
                             high=comparison.high, seeds=comparison.n, verdict=comparison.verdict,
                             words=comparison.words()))
    return pd.DataFrame(rows).set_index("comparison")


def token_spread(config, texts: int = 512) -> pd.DataFrame:
    """How much each layer's [CLS] hidden state and the mean of its real tokens' vary between
    ``texts`` validation texts in the encoder *as loaded* (before any training here): the norm of
    the per-dimension standard deviation over texts, as a share of the norm of the mean. A
    representation that barely varies gives a linear head little to read."""
    spec = dataset_spec(config.dataset)
    data = load_text_dataset(config.dataset, config.val_fraction)
    sample, _ = data.split("val")
    ids = tokenize(config.arch, sample[:texts], spec.max_tokens)
    torch.manual_seed(config.seed)
    backbone = arch_spec(config.arch).build(spec.num_classes, 0, 0).eval()
    rows = []
    with torch.no_grad():
        state = backbone.stem(ids)
        for layer, block in enumerate(backbone.blocks, start=1):
            state = block(state)
            hidden, _, tokens = state
            weights = tokens.to(hidden.dtype).unsqueeze(-1)
            mean = (hidden * weights).sum(1) / weights.sum(1)
            rows.append({"layer": layer, "[CLS]": _spread(hidden[:, 0]), "mean of the tokens": _spread(mean)})
    return pd.DataFrame(rows).set_index("layer")


def _spread(features: torch.Tensor) -> float:
    return float(features.std(0).norm() / features.mean(0).norm())


def _spread_findings(spread: pd.DataFrame, head: str, final_head: str = "own") -> list[str]:
    inner = spread.iloc[:-1]
    reads = {"cls": "the [CLS] token's", "mean": "the mean of the real tokens'"}.get(head, head)
    last = {"own": "the model's own classifier (BERT: the pooler on [CLS])",
            "mean": "the mean of the real tokens into the model's classifier"}.get(final_head, final_head)
    return [f"In the encoder as loaded, the [CLS] hidden state of layers 1–{len(inner)} varies between texts by "
            f"{inner['[CLS]'].min():.1%}–{inner['[CLS]'].max():.1%} of its norm, the mean of the tokens by "
            f"{inner['mean of the tokens'].min():.0%}–{inner['mean of the tokens'].max():.0%} (the last layer: "
            f"{spread['[CLS]'].iloc[-1]:.0%} and {spread['mean of the tokens'].iloc[-1]:.0%}). The heads here read "
            f"{reads} hidden state (head '{head}'), the last exit {last} (final head '{final_head}')."]


def _paper_findings(final: pd.DataFrame, controls: dict[str, str]) -> list[str]:
    paper = SETTINGS[PAPER_SETTING]
    lines = []
    if "joint − disjoint" in final.index:
        row = final.loc["joint − disjoint"]
        hurts = {"behind": "joint training costs the final exit accuracy here too",
                 "ahead": "here joint training *raises* the final exit's accuracy, unlike the paper's BERT",
                 }.get(row["verdict"], "here the final exits of joint and disjoint are not distinguishable")
        lines.append(f"Does joint hurt the final exit? The paper's BERT-Base on 20 Newsgroups: joint − disjoint "
                     f"{paper.paper['joint'] - paper.paper['disjoint']:+.2f} points. Here: {row['words']}: {hurts}.")
    if "mixed − disjoint" in final.index and "mixed − joint" in final.index:
        lines.append(f"Mixed at the final exit: against disjoint {final.loc['mixed − disjoint', 'words']}; against "
                     f"joint {final.loc['mixed − joint', 'words']} (the paper's: "
                     f"{paper.paper['mixed'] - paper.paper['disjoint']:+.2f} and "
                     f"{paper.paper['mixed'] - paper.paper['joint']:+.2f} points).")
    if {"joint", "disjoint"} <= set(controls):
        long_joint, long_disjoint = controls["joint"], controls["disjoint"]
        lines.append(f"At equal compute (each fine-tunes the encoder as long as mixed does): "
                     f"{long_joint} − {long_disjoint} {final.loc[f'{long_joint} − {long_disjoint}', 'words']}; "
                     f"mixed − {long_joint} {final.loc[f'mixed − {long_joint}', 'words']}; mixed − {long_disjoint} "
                     f"{final.loc[f'mixed − {long_disjoint}', 'words']}.")
    lines.append(f"The paper's numbers ({paper.description}; {paper.chosen}).")
    return lines


def draw_tradeoff(result: Result):
    study = result["study"]
    return plots.plot_tradeoff(study, title=f"{result['arch']} on {result['dataset']} ({study.policy} rule, "
                                            f"{len(study.seeds)} seeds)")


def draw_exits(result: Result):
    """Each exit's test accuracy (mean ± std over seeds) by regime, against the layer it follows."""
    exits, config = result["exits"], result["study"].runs[0].config
    layers = [*config.exit_after_blocks, arch_spec(config.arch).num_blocks]  # the layer each exit reads
    regimes = list(dict.fromkeys(exits["regime"]))
    colors = plots.colors_for(regimes)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for regime in regimes:
        part = exits[exits["regime"] == regime].groupby("exit")["accuracy"].agg(["mean", "std"]) * 100
        ax.errorbar([layers[k] for k in part.index], part["mean"], yerr=part["std"].fillna(0), color=colors[regime], marker="o",
                    ms=4, capsize=2, label=regime)
    ax.set_xlabel("exit after layer")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(layers)
    ax.set_title(f"Every exit alone: {result['arch']} on {result['dataset']}")
    ax.legend(loc="lower right")
    return fig


FIGURES = {"language_tradeoff": draw_tradeoff, "language_exits": draw_exits}

__all__ = ["FIGURES", "FINAL_PAIRS", "NOTEBOOK", "PAPER_SETTING", "TABLES", "TITLE", "final_exit_table", "final_pairs",
           "run"]
