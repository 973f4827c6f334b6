# %% [markdown]
# # 00 · A guided tour: what is an early exit?
#
# **The question.** A neural network spends the same computation on every input, yet most
# inputs are easy: a shoe is recognisable long before the last layer. An **early-exit** (or
# **multi-exit**) network attaches small classifiers, the *exits*, after some of its blocks.
# At inference a sample stops at the first exit that is confident enough, and its remaining
# blocks are never computed. This tour, for readers who know what a CNN is, builds such a model
# with `mexlib`, trains it for about a minute, looks at what each exit predicts, chooses a
# confidence threshold and counts what it saves, and ends with the question the study asks: how
# should the exits and the backbone be trained?
#
# Every code cell runs as it is; the small exercises say which parameter to change and what to
# look for, with an answer you can unfold.

# %% [parameters]
profile = "cpu"
train = None  # the tour's training run; None: 3 epochs on 12,000 images (smoke: the smoke profile's own)
threshold = 0.9  # the confidence an exit needs before a sample may leave there
images_shown = 8
live = True  # the live slider below; unattended runs (make reproduce, the tests) set False
seeds = None  # seeds of the regimes picture (from the regimes notebook's runs in the store)
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor
overrides = {}

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from mexlib import evaluate, plots, study
from mexlib.config import make_config, profile_settings
from mexlib.data import dataset_spec, load_dataset
from mexlib.notebook import check_parameters
from mexlib.store import RunStore
from mexlib.train import build_model

check_parameters()
plots.use_style()
if train is None:
    train = profile_settings(profile).tour_training  # the smoke profile: its own toy sizes
config = make_config(profile, regime="joint", **{**train, **overrides})
spec = dataset_spec(config.dataset)
data = load_dataset(config.dataset)
print(f"{config.dataset}: {len(data.train_labels)} training and {len(data.test_labels)} test images "
      f"of {spec.num_classes} classes, {spec.channels}×{spec.image_size}×{spec.image_size} pixels")

# %% [markdown]
# ## 1 · A backbone with exits
# The backbone is a small ResNet: a stem, then blocks that each transform a feature map. After
# some blocks we attach an exit: SDN's head (Kaya et al. 2019), which pools the feature map to
# 4×4 and applies one linear layer. The backbone's own classifier is the last exit. Counting
# the FLOPs each exit needs (the blocks before it plus every exit evaluated on the way) gives
# the cost of leaving there, relative to the plain backbone.

# %%
store = RunStore(device=device, progress=profile_settings(profile).progress)
costs = evaluate.exit_costs(build_model(config), (spec.channels, spec.image_size, spec.image_size))
print(f"{config.arch}: exits after blocks {config.exit_after_blocks} and the final classifier")
print(pd.DataFrame({"exit": range(len(costs.relative)),
                    "cost (% of the backbone)": (100 * costs.relative.numpy()).round(1)}).to_markdown(index=False))

# %% [markdown]
# ## 2 · Training it, briefly
# The simplest regime trains everything at once: the loss is the mean of every exit's
# cross-entropy (the *joint* regime). `get_or_run` trains the configuration once and keeps the
# result in the run store (`data/runs/`); running this cell again loads it.

# %%
run = store.get_or_run(config)
logits, labels = run.logits("test")  # every exit's logits on the test set: [exits, images, classes]
exit_accuracy = evaluate.per_exit_accuracy(logits, labels)
seconds = run.provenance["wall_time_seconds"]
print(f"trained in {seconds:.0f} s ({config.joint_phase.epochs} epochs on {config.train_size or 'all'} images)")
print(pd.DataFrame({"exit": range(len(exit_accuracy)),
                    "test accuracy (%)": (100 * exit_accuracy.numpy()).round(1)}).to_markdown(index=False))

# %% [markdown]
# Deeper exits are more accurate: they see more of the network. The first exit is cheap but
# often wrong. The point of early exiting is that it does not need to be right on *every*
# image, only on those where it is confident.
#
# ## 3 · What each exit says about a few test images
# Each column is one test image; each row an exit, with its top class and its confidence (the
# largest softmax probability). The exit where the image would leave at the threshold is
# marked ▶: the first whose confidence exceeds it.

# %%
generator = torch.Generator().manual_seed(1)
chosen = torch.randperm(len(labels), generator=generator)[:images_shown]
probabilities = logits[:, chosen].softmax(-1)
confidence, predicted = probabilities.max(-1)  # [exits, images]
decision = evaluate.confidence_policy(logits[:, chosen], [threshold])
leaves = decision.exit_index[0]
num_exits = logits.shape[0]
fig, axes = plt.subplots(1, images_shown, figsize=(1.9 * images_shown, 2.0 + 0.32 * num_exits),
                         layout="constrained")
for column, (ax, index) in enumerate(zip(np.atleast_1d(axes), chosen.tolist())):
    image = data.test_images[index].float().permute(1, 2, 0).squeeze(-1) / 255
    ax.imshow(image, cmap="gray" if spec.channels == 1 else None)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(f"true: {data.classes[labels[index]]}", fontsize=8)
    lines = []
    for k in range(num_exits):
        mark = "▶" if k == leaves[column] else " "
        lines.append(f"{mark}{k}: {data.classes[predicted[k, column]][:10]} {100 * confidence[k, column]:.0f}%")
    ax.set_xlabel("\n".join(lines), fontsize=7, family="monospace", loc="left")
fig.suptitle(f"Each exit's prediction and confidence; ▶ where the image leaves at threshold {threshold:g}")
plots.save_figure(fig, "tour_predictions", profile)
plt.show()

# %% [markdown]
# ## 4 · Choosing a threshold, and what it costs
# A sample leaves at the first exit whose confidence exceeds the threshold τ (the last exit
# takes whatever is left). A low τ lets most images leave early: cheap, less accurate. A high τ
# keeps them in the network: accurate, expensive. The expected cost is the mean over test
# images of the cost of the exit each one takes.

# %%
curve = evaluate.tradeoff_curve(logits, labels, costs.relative)  # 100 thresholds in [0, 1]
at = evaluate.confidence_policy(logits, [threshold])
taken = evaluate.exit_distribution(at.exit_index[0], num_exits)
accuracy_at = float(at.accuracy(logits, labels)[0])
cost_at = float(at.expected_cost(costs.relative)[0])
# NBVAL_CHECK_OUTPUT
print(f"threshold {threshold:g}: accuracy {100 * accuracy_at:.1f} % at {100 * cost_at:.1f} % of the backbone's "
      f"cost; the final exit alone: {100 * exit_accuracy[-1]:.1f} % at {100 * costs.relative[-1]:.1f} %")


def threshold_view(threshold=threshold):
    """Accuracy and expected cost against the threshold, and where images leave at it."""
    decision = evaluate.confidence_policy(logits, [threshold])
    shares = evaluate.exit_distribution(decision.exit_index[0], num_exits) * 100
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    left.plot(curve["threshold"], 100 * curve["accuracy"], label="accuracy (%)")
    left.plot(curve["threshold"], 100 * curve["cost"], label="expected cost (% of the backbone)")
    left.axvline(threshold, color="black", lw=1, ls="--")
    left.set_xlabel("threshold τ")
    left.set_title(f"τ = {threshold:.2f}: accuracy {100 * float(decision.accuracy(logits, labels)[0]):.1f} %, "
                   f"cost {100 * float(decision.expected_cost(costs.relative)[0]):.1f} %")
    left.legend(loc="best")
    right.bar(range(num_exits), shares.numpy(), color=plots.REGIME_COLORS["joint"])
    right.set_xlabel("exit")
    right.set_ylabel("share of test images leaving here (%)")
    right.set_xticks(range(num_exits))
    right.set_title("Where the images leave")
    return fig


fig = threshold_view(threshold)
plots.save_figure(fig, "tour_threshold", profile)
plt.show()

# %% [markdown]
# In JupyterLab the slider below redraws the same view as you move the threshold. Executed
# headless, as by `make reproduce`, the notebook leaves the slider out (`live = False`): nobody
# can move it there, and papermill's client at times waited forever on the messages of its
# output widget. The static figure above shows the parameter's threshold.

# %%
try:
    import ipywidgets
except ImportError:  # the static figure above still shows the view
    ipywidgets = None
if not live:
    print("live = False (an unattended run): no slider; the static figure above shows the threshold's view")
elif ipywidgets is None:
    print("ipywidgets is not installed: the static figure above shows the threshold's view")
else:
    slider = ipywidgets.FloatSlider(value=threshold, min=0.0, max=1.0, step=0.01, description="threshold τ",
                                    continuous_update=False)
    display(ipywidgets.interactive(lambda threshold: plt.show(threshold_view(threshold)), threshold=slider))

# %% [markdown]
# **Exercise 1.** Set `threshold` in the parameters cell to 0.5, then to 0.99, and rerun. How do
# the accuracy, the cost and the exits taken change?
#
# <details><summary>Answer</summary>
#
# At 0.5 almost every image leaves at the first exits: the cost drops to a fraction of the
# backbone's, and the accuracy falls towards the first exits' own. At 0.99 only images that an
# exit is very sure about leave early: accuracy approaches the final exit's, and so does the
# cost. Somewhere between, most of the accuracy is kept at a much lower cost: that is the
# operating point early exiting is for.
# </details>
#
# **Exercise 2.** The curve sweeps 100 thresholds. Which accuracy can you reach at half the
# backbone's cost? (Hint: `curve[curve["cost"] <= 0.5]["accuracy"].max()`.)
#
# <details><summary>Answer</summary>
#
# The best point of the curve within the budget; the study reports exactly this number at
# budgets of 25, 50, 75 and 100 % (`evaluate.accuracy_at_budgets(curve)`).
# </details>

# %% [markdown]
# ## 5 · How should such a model be trained?
# The tour trained everything at once. The study compares three regimes: **disjoint** (train
# the backbone alone, freeze it, then fit the exits), **joint** (everything together from
# scratch, as above) and **mixed** (the backbone alone first, then everything together). Each
# line below is one regime's accuracy against its expected cost over the thresholds, mean over
# seeds; these runs are the regimes notebook's, read from the run store (trained now if the
# store lacks them, which takes about 35 minutes in the `cpu` profile).

# %%
comparison = study.compare_regimes(profile, seeds=seeds, device=device, progress=profile_settings(profile).progress,
                                   executor=executor, workers=workers, **overrides)
fig = plots.plot_tradeoff(comparison, title="Three ways to train the same multi-exit model")
plots.save_figure(fig, "tour_regimes", profile)
plt.show()
table = comparison.budget_table(reference=False)

# %% [markdown]
# **Exercise 3.** Which regime gives the best early exits (low cost), and which the best final
# exit? Read it off the figure, then check `comparison.per_exit_accuracy()`.
#
# <details><summary>Answer</summary>
#
# The dots at the far left of each line are the first exits, the ones at the right the final
# exits; `per_exit_accuracy()` gives them per seed. What to expect and why: disjoint's frozen
# backbone was never asked to produce features an early head can use, so its early exits may be
# weak, while its final exit is exactly the backbone trained alone; joint and mixed train the
# backbone for its exits too, which may help early exits and cost final accuracy. The last
# line of "What we found" below gives this run's numbers; the regimes notebook (01) judges the
# differences with their intervals over seeds.
# </details>
#
# ## What we found
# Computed from this run's numbers.

# %%
leave_early = 100 * float(taken[:-1].sum())
best = {b: table[(b, "mean")].idxmax() for b in evaluate.BUDGETS if table[(b, "mean")].notna().any()}
lines = [f"At threshold {threshold:g}, {leave_early:.0f} % of the test images leave before the final exit; "
         f"accuracy is {100 * accuracy_at:.1f} % at {100 * cost_at:.0f} % of the backbone's cost, against "
         f"{100 * exit_accuracy[-1]:.1f} % for the final exit alone.",
         "Best regime per budget (mean over seeds): "
         + ", ".join(f"{regime} at {budget:.0%}" for budget, regime in best.items()) + "."]
exits = comparison.per_exit_accuracy().groupby(["regime", "exit"])["accuracy"].mean()
last = comparison.num_exits - 1
lines.append("First exit / final exit (mean over seeds): " + ", ".join(
    f"{r} {100 * exits[(r, 0)]:.1f} % / {100 * exits[(r, last)]:.1f} %" for r in comparison.regimes) + ".")
display(Markdown("\n".join(f"* {line}" for line in lines)
                 + "\n\nNext: [00 · The data](00_data.ipynb), then [01 · The regimes](01_regimes.ipynb)."))
