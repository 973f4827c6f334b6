"""Text datasets for the language chapter: WordNet glosses labelled by their supersense, and 20
Newsgroups.

Every WordNet synset has a gloss (its definition, often followed by examples of use) and sits in
one of 45 *lexicographer files*, the coarse classes known as supersenses: 26 for nouns
(``noun.animal``, ``noun.artifact``, ...), 15 for verbs, 3 for adjectives and 1 for adverbs.
Predicting the supersense from the gloss is a 45-class text classification task with about
117,000 examples that needs no download: Debian's ``wordnet-base`` package holds WordNet 3.0's
database files (``apt-get install wordnet-base``; :data:`WORDNET_FOLDERS` says where they are
looked for).

20 Newsgroups, the paper's language data set, comes through scikit-learn's fetcher wherever a
user has internet (:func:`load_20newsgroups`).

The texts stay strings here; a language backbone tokenises them with its own tokenizer. The
split into training, validation and test sets is stratified by class with a fixed seed
(:func:`mexlib.data.stratified_split`), so every run of a study sees the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from . import paths
from .data import DatasetCorruptError, DatasetNotFoundError, stratified_split

#: WordNet 3.0's lexicographer files by number (the second field of every line of a data file).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
#: The database files, one per part of speech.
DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
#: Where WordNet's database is looked for: ``<data>/wordnet`` (``MEXLIB_DATA``), then Debian's package.
WORDNET_FOLDERS = (Path("/usr/share/wordnet"),)
MISSING = ("WordNet's database files (data.noun, data.verb, data.adj, data.adv) were not found in {where}. "
           "On Debian or Ubuntu: apt-get install wordnet-base; elsewhere, download WordNet 3.0 "
           "(https://wordnet.princeton.edu) and put its dict/ files into {first}.")


@dataclass(frozen=True)
class TextData:
    """A labelled text dataset in memory: ``texts[i]`` has class ``labels[i]``, named
    ``classes[labels[i]]``; ``splits`` maps ``train``, ``val`` and ``test`` to sorted indices."""

    name: str
    texts: tuple[str, ...]
    labels: Tensor
    classes: tuple[str, ...]
    splits: dict[str, Tensor]

    def split(self, name: str) -> tuple[list[str], Tensor]:
        """The texts and labels of split ``name``."""
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; valid splits: {', '.join(self.splits)}")
        indices = self.splits[name]
        return [self.texts[i] for i in indices.tolist()], self.labels[indices]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return f"TextData({self.name}: {len(self.texts)} texts, {len(self.classes)} classes; {sizes})"


def wordnet_folders() -> list[Path]:
    return [paths.data_dir() / "wordnet", *WORDNET_FOLDERS]


def find_wordnet(folder: str | Path | None = None) -> Path:
    """The folder holding WordNet's four data files: ``folder``, or the first of
    :func:`wordnet_folders` that has them; a clear error naming the places otherwise."""
    places = [Path(folder)] if folder is not None else wordnet_folders()
    for place in places:
        if all((place / name).is_file() for name in DATA_FILES):
            return place
    raise DatasetNotFoundError(MISSING.format(where=", ".join(map(str, places)), first=places[0]))


def read_glosses(folder: Path) -> tuple[list[str], list[int]]:
    """Every synset's gloss and lexicographer file number, from the four data files (the license
    lines that open each file start with two spaces and are skipped)."""
    texts, labels = [], []
    for name in DATA_FILES:
        path = folder / name
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if line.startswith("  "):
                    continue
                fields, bar, gloss = line.partition(" | ")
                parts = fields.split(" ", 2)
                if not bar or len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) >= len(LEXNAMES):
                    raise DatasetCorruptError(f"{path}, line {number}, is not a WordNet synset line "
                                              f"({line[:60]!r}); reinstall the files (apt-get install --reinstall "
                                              f"wordnet-base) or put WordNet 3.0's dict/ files there again")
                texts.append(gloss.strip())
                labels.append(int(parts[1]))
    return texts, labels


def load_wordnet_supersenses(folder: str | Path | None = None, val_fraction: float = 0.1,
                             test_fraction: float = 0.1, seed: int = 0) -> TextData:
    """WordNet's glosses labelled by supersense (:data:`LEXNAMES`), split by class into training,
    validation (``val_fraction``) and test (``test_fraction``) sets with ``seed``."""
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction and test_fraction must be positive with a sum below 1, got "
                         f"{val_fraction} and {test_fraction}")
    texts, labels = read_glosses(find_wordnet(folder))
    labels = torch.tensor(labels, dtype=torch.long)
    rest, test = stratified_split(labels, test_fraction, seed)
    train, val = stratified_split(labels[rest], val_fraction / (1 - test_fraction), seed + 1)
    splits = {"train": rest[train], "val": rest[val], "test": test}
    return TextData("wordnet-supersenses", tuple(texts), labels, LEXNAMES, splits)


# --- 20 Newsgroups (the paper's language data set), through scikit-learn -------------------------

#: The parts of a post removed before classification: the e-mail headers name the newsgroup, and
#: quoted replies and signatures tie posts of one thread or author together across the splits.
NEWSGROUPS_REMOVED = ("headers", "footers", "quotes")


def load_20newsgroups(root: str | Path | None = None, val_fraction: float = 0.1, seed: int = 0) -> TextData:
    """20 Newsgroups' "bydate" split (11,314 training and 7,532 test posts; scikit-learn's fetcher
    downloads it into ``<data>/20newsgroups`` once) without :data:`NEWSGROUPS_REMOVED`; a
    stratified ``val_fraction`` of the training posts is held out for validation with ``seed``."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    try:
        from sklearn.datasets import fetch_20newsgroups
    except ImportError as error:
        raise ImportError("20 Newsgroups is read by scikit-learn: pip install scikit-learn") from error
    home = Path(root) if root is not None else paths.data_dir() / "20newsgroups"
    home.mkdir(parents=True, exist_ok=True)
    parts = {}
    for subset in ("train", "test"):
        try:
            parts[subset] = fetch_20newsgroups(data_home=str(home), subset=subset, remove=NEWSGROUPS_REMOVED,
                                               shuffle=False)
        except OSError as error:  # no internet (URLError is an OSError) or a damaged archive
            raise DatasetNotFoundError(f"20 Newsgroups is not in {home} and could not be downloaded ({error}); "
                                       f"on a machine with internet, scikit-learn's fetch_20newsgroups(data_home="
                                       f"{str(home)!r}) fetches it, then copy that folder here") from error
    texts = [*parts["train"].data, *parts["test"].data]
    labels = torch.tensor([*parts["train"].target, *parts["test"].target], dtype=torch.long)
    train_pool = torch.arange(len(parts["train"].data))
    rest, val = stratified_split(labels[train_pool], val_fraction, seed)
    splits = {"train": train_pool[rest], "val": train_pool[val], "test": torch.arange(len(train_pool), len(texts))}
    return TextData("20newsgroups", tuple(texts), labels, tuple(parts["train"].target_names), splits)


#: The text data sets by the name their :class:`mexlib.data.DatasetSpec` has.
TEXT_LOADERS = {"wordnet-supersenses": load_wordnet_supersenses, "20newsgroups": load_20newsgroups}


def load_text_dataset(name: str, val_fraction: float = 0.1) -> TextData:
    """The text data set ``name`` with a validation split of ``val_fraction`` (its test split its own)."""
    if name not in TEXT_LOADERS:
        raise ValueError(f"unknown text data set {name!r}; valid names: {', '.join(TEXT_LOADERS)}")
    return TEXT_LOADERS[name](val_fraction=val_fraction)


__all__ = ["DATA_FILES", "LEXNAMES", "NEWSGROUPS_REMOVED", "TEXT_LOADERS", "TextData", "WORDNET_FOLDERS",
           "find_wordnet", "load_20newsgroups", "load_text_dataset", "load_wordnet_supersenses", "read_glosses",
           "wordnet_folders"]
