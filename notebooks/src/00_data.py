# %% [markdown]
# # 00 · The data
#
# Every experiment of the study trains on one image-classification dataset. **The question of
# this chapter:** what exactly do the models learn from and get tested on? This notebook loads
# the dataset, shows what the images look like, and checks the three splits the training code
# uses:
#
# * **train**: the images the network learns from (augmented with random crops and flips);
# * **validation**: a stratified 10 % of the official training set, held out and never
#   augmented, on which early stopping picks each phase's checkpoint;
# * **test**: the official test set, touched only once per finished run, to evaluate exits.
#
# The parameters cell below is what `make reproduce` (papermill) overrides: `profile` picks the
# defaults (`smoke`, `cpu`, `paper`), `overrides` changes single settings of the configuration.

# %% [parameters]
profile = "cpu"
samples_per_class = 8
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from mexlib import batches as mbatches, config as mconfig, data as mdata, plots
from mexlib.notebook import check_parameters

check_parameters()
config = mconfig.make_config(profile, **overrides)
plots.use_style()
print(f"profile {profile}: dataset {config.dataset}")

# %% [markdown]
# ## Loading and splitting
#
# `load_dataset` holds the whole dataset in memory as `uint8` tensors. The validation split is
# drawn per class with its own seeded generator, so it is the same in every run; the `cpu` and
# `smoke` profiles then train on a stratified subset of the remaining images (`train_size`) to
# fit a 2-core machine, and the `smoke` profile validates on a stratified subset of the
# validation split (`val_size`).

# %%
data = mdata.load_dataset(config.dataset)
splits = mdata.make_splits(data, config.val_fraction, seed=0, train_size=config.train_size,
                           val_size=config.val_size)
test_labels = data.test_labels[: config.test_size]
split_labels = {"train": data.train_labels[splits.train], "validation": data.train_labels[splits.val],
                "test": test_labels}
# NBVAL_CHECK_OUTPUT
print(data)
for name, labels in split_labels.items():
    print(f"{name:>10}: {len(labels):6d} images")

# %% [markdown]
# ## What the images look like
# One row per class, `samples_per_class` training images each.

# %%
classes = data.classes
generator = torch.Generator().manual_seed(0)
fig, axes = plt.subplots(len(classes), samples_per_class,
                         figsize=(samples_per_class * 0.9, len(classes) * 0.95), layout="constrained")
for row, name in enumerate(classes):
    members = torch.nonzero(data.train_labels == row).flatten()
    chosen = members[torch.randperm(len(members), generator=generator)[:samples_per_class]]
    for col, index in enumerate(chosen):
        image = data.train_images[index].permute(1, 2, 0).squeeze(-1)
        ax = axes[row, col]
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_xticks([]), ax.set_yticks([])
        if col == 0:
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle(f"{config.dataset}: training images per class")
plots.save_figure(fig, "data_samples", profile)
plt.show()

# %% [markdown]
# ## Class balance
# A stratified split keeps every class's share of the data the same in all three splits, so
# accuracy on validation and test measures the same task as training.

# %%
balance = pd.DataFrame({name: torch.bincount(labels, minlength=len(classes)).numpy()
                        for name, labels in split_labels.items()}, index=classes)
shares = balance / balance.sum()
fig, ax = plt.subplots(figsize=(8, 3.2))
shares.mul(100).plot.bar(ax=ax, width=0.8, color=["#4C72B0", "#DD8452", "#55A868"])
ax.set_ylabel("share of the split (%)")
ax.set_title("Class balance of the train, validation and test splits", pad=28)
ax.legend(title=None, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.08))
plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
plots.save_figure(fig, "data_class_balance", profile)
plt.show()
plots.save_table(balance.rename_axis("class"), "data_class_balance", profile)
# NBVAL_CHECK_OUTPUT
print("largest difference between a class's share in two splits:",
      f"{(shares.max(axis=1) - shares.min(axis=1)).max() * 100:.3f} percentage points")

# %% [markdown]
# ## Training augmentation
# During training every batch is augmented on the training device: a random crop after zero
# padding and a random horizontal flip, each sample drawn independently (the paper profile adds
# TrivialAugment before them). Validation and test
# images are never augmented. Below, the first column is the original, the others are augmented
# versions of it.

# %%
augment = mbatches.BatchAugment.for_dataset(data.spec, config.trivial_augment)
originals = data.train_images[splits.train[:6]]
fig, axes = plt.subplots(len(originals), 6, figsize=(6 * 0.9, len(originals) * 0.95),
                         layout="constrained")
for col in range(6):
    images = originals if col == 0 else augment(originals, torch.Generator().manual_seed(col))
    for row, image in enumerate(images):
        image = image.permute(1, 2, 0).squeeze(-1)
        axes[row, col].imshow(image, cmap="gray" if image.ndim == 2 else None)
        axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
axes[0, 0].set_title("original", fontsize=8)
fig.suptitle(f"Random crop (padding {data.spec.crop_padding}) and flip"
             + (" after TrivialAugment" if config.trivial_augment else ""))
plots.save_figure(fig, "data_augmentation", profile)
plt.show()

# %% [markdown]
# ## What we found
# Computed from the splits above.

# %%
counts = {name: torch.bincount(labels, minlength=len(classes)) for name, labels in split_labels.items()}
balance = {name: f"{int(c.min())}–{int(c.max())} images per class" for name, c in counts.items()}
display(Markdown("\n".join(f"* {name}: {len(split_labels[name])} images, {text}" for name, text in balance.items())
                 + "\n\nNext: [01 · Disjoint, joint or mixed?](01_regimes.ipynb)"))
