"""A run's data on its training device: the one home of the trainer's and the analyses' data.

- :class:`DeviceData`: a dataset held in memory, its train / validation / test splits moved to
  the device once as ``uint8`` tensors, batched and augmented there (Fashion-MNIST, CIFAR,
  Tiny ImageNet, Imagenette); a text data set the same way, as token ids by the run's encoder's
  tokenizer (:meth:`DeviceData.from_text`).
- :class:`StreamingData`: a dataset too large for memory, streamed from disk (below).
- :class:`DataCache`: each distinct data set loaded and moved to the device once per process,
  shared by every run and seed that needs it (:meth:`DataCache.get`).

Streaming: ImageNet-1k for the paper's ViT-T/ViT-S rows. The in-memory path holds a dataset as
one ``uint8`` tensor; ImageNet-1k at 224 px would take about 190 GB. :class:`StreamingData` offers the trainer the
same interface (``train_loader``, ``eval_loader``) over image files that worker processes decode
batch by batch, so one GPU node trains on it with a few GB of memory.

Reproducible whatever the number of workers. Every sample of an epoch is decoded with its own
seed, drawn with the epoch's order from ``(seed, epoch)``; the random crop, flip and
TrivialAugment of a sample depend on that seed only, not on which worker decodes it or in which
order. So a run resumed at epoch ``e`` sees the batches an uninterrupted run would have seen (as
with the in-memory loader), and 0, 2 or 16 workers give the same batches bit for bit.

Where the data come from: ``<data>/imagenet``, read by torchvision's ``ImageNet``. Place there
either the three archives ``ILSVRC2012_devkit_t12.tar.gz``, ``ILSVRC2012_img_train.tar`` and
``ILSVRC2012_img_val.tar`` (torchvision verifies and unpacks them once, on first use), or what it
unpacks them to: ``meta.bin``, ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``. ImageNet cannot
be downloaded automatically (its licence requires a login at image-net.org).

Splits, as for every dataset: validation is a stratified ``val_fraction`` of the training images
(seed 0); ``train_size`` / ``val_size`` cap them with stratified subsets. The test split is
ImageNet's 50,000 validation images, which its folders hold sorted by class, so ``test_size``
caps it with a stratified subset too (not the first images, as for the shuffled in-memory sets).

Transforms: training (with ``augment``; without it, the evaluation's), torchvision's ``RandomResizedCrop`` to the spec's size and a horizontal
flip (then TrivialAugmentWide where the configuration asks for it), as in DeiT; evaluation, a
resize of the short side to size / 0.875 and the centre crop. Normalisation runs on the training
device, on the ``uint8`` batch, as for the in-memory datasets.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from . import hardware, paths
from .config import RunConfig
from .batches import BatchAugment, BatchLoader, Normalize, batch_count, epoch_generator
from .data import (DatasetNotFoundError, DatasetSpec, ImageData, dataset_spec, load_dataset, make_splits, split_indices,
                   stratified_split, stratified_subset)
from .models import arch_spec
from .models.encoders import tokenize
from .text_data import TextData, load_text_dataset

if TYPE_CHECKING:  # imported where used: importing torchvision takes a second
    import torchvision
    from torchvision.transforms import v2

#: Each phase's offset of the training batches' seed (a run's phases see different orders; the
#: backbone's continuation sees the batches mixed's phase 2 sees).
PHASE_SEED = {"backbone": 1, "joint": 2, "continue": 2, "heads": 3}
EVAL_BATCH_SIZE = 256  # faster per image than 1000 on a 2-core CPU (cache)


def memory_format_for(config: RunConfig, device: str | torch.device) -> torch.memory_format:
    """The layout of the run's weights and batches on ``device``: channels-last for CNNs on
    CUDA only, NCHW on the CPU (:mod:`mexlib.hardware` gives the oneDNN bug behind it)."""
    return hardware.memory_format(arch_spec(config.arch).prefers_channels_last, device)


@dataclass
class DeviceData:
    """The run's train / validation / test tensors, moved to the training device once."""

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    normalize: Normalize | Callable[[Tensor], Tensor]  # texts: the ids as they are
    augment: BatchAugment | None
    memory_format: torch.memory_format = torch.contiguous_format
    seed: int = 0  # seeds the training batches' order and augmentation

    @staticmethod
    def key(config: RunConfig) -> tuple:
        """What the tensors depend on: runs that agree on it can share one DeviceData (with
        their own ``seed``, see :func:`dataclasses.replace`)."""
        arch = arch_spec(config.arch)  # texts are tokenised by the model's own tokenizer
        return (config.dataset, config.train_size, config.val_size, config.test_size, config.val_fraction,
                arch.family if arch.modality == "image" else config.arch, config.augment, config.trivial_augment)

    @classmethod
    def from_dataset(cls, config: RunConfig, data: ImageData, device: torch.device) -> "DeviceData":
        splits = make_splits(data, config.val_fraction, seed=0, train_size=config.train_size,
                             val_size=config.val_size)
        test = slice(0, config.test_size)
        spec = dataset_spec(config.dataset)
        return cls(data.train_images[splits.train].to(device), data.train_labels[splits.train].to(device),
                   data.train_images[splits.val].to(device), data.train_labels[splits.val].to(device),
                   data.test_images[test].to(device), data.test_labels[test].to(device),
                   Normalize(spec, device),
                   BatchAugment.for_dataset(spec, config.trivial_augment) if config.augment else None,
                   memory_format_for(config, device), config.seed)

    @classmethod
    def from_text(cls, config: RunConfig, data: TextData, device: torch.device) -> "DeviceData":
        """A text data set as token ids ``[N, max_tokens]`` by the run's encoder's tokenizer (the
        "images" of the fields' names; no augmentation or normalisation), ``train_size`` /
        ``val_size`` / ``test_size`` capping each split with a stratified subset."""
        spec = dataset_spec(config.dataset)
        parts = []
        for split, size, seed in (("train", config.train_size, 1), ("val", config.val_size, 2),
                                  ("test", config.test_size, 3)):
            indices = data.splits[split]
            indices = stratified_subset(data.labels, indices, size, seed, f"{split}_size")
            ids = tokenize(config.arch, [data.texts[i] for i in indices.tolist()], spec.max_tokens)
            parts += [ids.to(device), data.labels[indices].to(device)]
        return cls(*parts, normalize=_token_ids, augment=None, seed=config.seed)

    def train_loader(self, phase: str, batch_size: int) -> BatchLoader:
        return BatchLoader(self.train_images, self.train_labels, batch_size, self.normalize,
                           shuffle=True, augment=self.augment, drop_last=True,
                           seed=self.seed * 100 + PHASE_SEED[phase],
                           memory_format=self.memory_format)

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """The images (uint8, as stored) and labels of the ``"train"``, ``"val"`` or ``"test"`` split."""
        splits = {"train": (self.train_images, self.train_labels), "val": (self.val_images, self.val_labels),
                  "test": (self.test_images, self.test_labels)}
        if name not in splits:
            raise ValueError(f"unknown split {name!r}; valid splits: {', '.join(splits)}")
        return splits[name]

    def eval_loader(self, split: str) -> BatchLoader:
        """The ``"train"``, ``"val"`` or ``"test"`` split in order, without augmentation."""
        images, labels = self.split(split)
        return BatchLoader(images, labels, EVAL_BATCH_SIZE, self.normalize,
                           memory_format=self.memory_format)


def _token_ids(ids: Tensor) -> Tensor:
    """Text batches go to the model as they are stored: token ids."""
    return ids


# --- streamed from disk ----------------------------------------------------------------------

#: The archives torchvision's ImageNet reads (it unpacks them on first use).
IMAGENET_ARCHIVES = ("ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
#: The centre crop's share of the resized image at evaluation (224 of 256, as in ResNet and DeiT).
EVAL_CROP_RATIO = 0.875


def default_workers() -> int:
    """Decoding processes per loader: ``MEXLIB_LOADER_WORKERS``, else one per CPU this process
    may use but one (for the training loop), at most 8. Not part of a run's key: the batches do
    not depend on it."""
    if "MEXLIB_LOADER_WORKERS" in os.environ:
        value = os.environ["MEXLIB_LOADER_WORKERS"]
        if not value.isdigit():
            raise ValueError(f"MEXLIB_LOADER_WORKERS must be a whole number >= 0, got {value!r}")
        return int(value)
    return max(0, min(8, hardware.usable_cores() - 1))


def train_transform(spec: DatasetSpec, trivial_augment: bool = False) -> v2.Compose:
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(spec.image_size, antialias=True)]
    if spec.flip:
        steps.append(v2.RandomHorizontalFlip())
    if trivial_augment:
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose([*steps, v2.PILToTensor()])


def eval_transform(spec: DatasetSpec) -> v2.Compose:
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(round(spec.image_size / EVAL_CROP_RATIO), antialias=True),
                       v2.CenterCrop(spec.image_size), v2.PILToTensor()])


class SeededSamples(Dataset):
    """Image files decoded and transformed on demand. An item is read by ``(index, seed)``:
    the transform draws its randomness from ``seed`` alone (torchvision's transforms draw from
    the global generator, which is seeded here and restored afterwards)."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = key
        path, label = self.samples[index]
        with Image.open(path) as pil:
            image = pil.convert("RGB")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label


class _EpochBatches:
    """The batch sampler of one loader: lists of ``(index, seed)`` keys, drawn anew for each
    epoch from ``(seed, epoch)`` only."""

    def __init__(self, indices: Tensor, batch_size: int, shuffle: bool, drop_last: bool, seed: int):
        self.indices, self.batch_size = indices, batch_size
        self.shuffle, self.drop_last, self.seed, self.epoch = shuffle, drop_last, seed, 0

    def __len__(self) -> int:
        return batch_count(len(self.indices), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = epoch_generator(self.seed, self.epoch)
        n = len(self.indices)
        order = self.indices[torch.randperm(n, generator=generator)] if self.shuffle else self.indices
        seeds = torch.randint(2**62, (n,), generator=generator)
        keys = list(zip(order.tolist(), seeds.tolist()))
        for i in range(len(self)):
            yield keys[i * self.batch_size:(i + 1) * self.batch_size]


class StreamLoader:
    """Batches of (normalised images, labels) on the training device, decoded from files by
    ``workers`` processes; the interface of :class:`mexlib.batches.BatchLoader` (``set_epoch``,
    ``len``, iteration)."""

    def __init__(self, samples: SeededSamples, indices: Tensor, batch_size: int, normalize: Normalize,
                 device: torch.device, shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 memory_format: torch.memory_format = torch.contiguous_format, workers: int = 0):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batches = _EpochBatches(indices, batch_size, shuffle, drop_last, seed)
        self.normalize, self.device, self.memory_format = normalize, torch.device(device), memory_format
        self.loader = DataLoader(samples, batch_sampler=self.batches, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", persistent_workers=workers > 0)

    def set_epoch(self, epoch: int) -> None:
        self.batches.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield self.normalize(images).contiguous(memory_format=self.memory_format), labels


def open_imagenet(root: str | Path | None = None) -> tuple[torchvision.datasets.ImageNet, torchvision.datasets.ImageNet]:
    """torchvision's ImageNet ``train`` and ``val`` splits under ``<root>/imagenet`` (no image
    is decoded here), or a :class:`DatasetNotFoundError` that says what to put where."""
    folder = (Path(root) if root is not None else paths.data_dir()) / dataset_spec("imagenet").folder
    # each part as unpacked, or its archive (torchvision checks the archives' MD5 sums)
    parts = {"meta.bin": IMAGENET_ARCHIVES[0], "train": IMAGENET_ARCHIVES[1], "val": IMAGENET_ARCHIVES[2]}
    missing = [f"{unpacked} or {archive}" for unpacked, archive in parts.items()
               if not (folder / unpacked).exists() and not (folder / archive).is_file()]
    try:
        if missing:
            raise FileNotFoundError(f"missing: {'; '.join(missing)}")
        if not (folder / "meta.bin").is_file():
            if importlib.util.find_spec("scipy") is None:  # torchvision reads the devkit's .mat file with it
                raise RuntimeError("unpacking the devkit archive needs scipy: pip install scipy")
        import torchvision

        return (torchvision.datasets.ImageNet(folder, split="train"),
                torchvision.datasets.ImageNet(folder, split="val"))
    except (RuntimeError, FileNotFoundError) as error:
        raise DatasetNotFoundError(
            f"ImageNet-1k was not found in {folder} ({error}).\n"
            f"It cannot be downloaded automatically (image-net.org requires a login). Put either the "
            f"archives {', '.join(IMAGENET_ARCHIVES)} into {folder} (torchvision verifies and unpacks "
            f"them on first use), or the unpacked layout: meta.bin, train/<wnid>/*.JPEG and "
            f"val/<wnid>/*.JPEG.") from error


#: How each streamed dataset (``DatasetSpec.streamed``) opens its train and test image folders.
OPENERS = {"imagenet": open_imagenet}


@dataclass
class StreamingData:
    """A streamed dataset's splits for one run: :class:`DeviceData`'s interface
    for the trainer and the evaluation, with the images decoded from disk batch by batch."""

    train_samples: list[tuple[str, int]]
    test_samples: list[tuple[str, int]]
    train_indices: Tensor
    val_indices: Tensor
    test_indices: Tensor
    spec: DatasetSpec
    device: torch.device
    augment: bool = True
    trivial_augment: bool = False
    memory_format: torch.memory_format = torch.contiguous_format
    seed: int = 0  # seeds the training batches' order and augmentation
    workers: int = 0
    _eval_loaders: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    key = staticmethod(DeviceData.key)

    @classmethod
    def from_config(cls, config: RunConfig, device: torch.device, root: str | Path | None = None,
                    workers: int | None = None) -> "StreamingData":
        spec = dataset_spec(config.dataset)
        if not spec.streamed:
            raise ValueError(f"{spec.name} is held in memory (DeviceData); streamed datasets: "
                             f"{', '.join(OPENERS)}")
        train, test = OPENERS[spec.name](root)
        train_labels = torch.tensor(train.targets, dtype=torch.long)
        test_labels = torch.tensor(test.targets, dtype=torch.long)
        splits = split_indices(train_labels, config.val_fraction, seed=0, train_size=config.train_size,
                               val_size=config.val_size)
        test_indices = torch.arange(len(test_labels))
        if config.test_size is not None and config.test_size < len(test_labels):
            test_indices = stratified_split(test_labels, config.test_size / len(test_labels), 3,
                                            count=config.test_size)[1]
        return cls(list(train.samples), list(test.samples), splits.train, splits.val, test_indices, spec,
                   torch.device(device), config.augment, config.trivial_augment,
                   memory_format_for(config, device), config.seed,
                   default_workers() if workers is None else workers)

    def _normalize(self) -> Normalize:
        return Normalize(self.spec, self.device)

    def train_loader(self, phase: str, batch_size: int) -> StreamLoader:
        transform = train_transform(self.spec, self.trivial_augment) if self.augment else eval_transform(self.spec)
        return StreamLoader(SeededSamples(self.train_samples, transform), self.train_indices, batch_size,
                            self._normalize(), self.device, shuffle=True, drop_last=True,
                            seed=self.seed * 100 + PHASE_SEED[phase], memory_format=self.memory_format,
                            workers=self.workers)

    def eval_loader(self, split: str) -> StreamLoader:
        """The ``"train"``, ``"val"`` or ``"test"`` split in order, resized and centre-cropped
        (one loader per split, kept with its workers for the next validation)."""
        indices = {"train": self.train_indices, "val": self.val_indices, "test": self.test_indices}
        if split not in indices:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(indices)}")
        if split not in self._eval_loaders:
            samples = self.test_samples if split == "test" else self.train_samples
            self._eval_loaders[split] = StreamLoader(
                SeededSamples(samples, eval_transform(self.spec)), indices[split], EVAL_BATCH_SIZE,
                self._normalize(), self.device, memory_format=self.memory_format, workers=self.workers)
        return self._eval_loaders[split]

    def split(self, name: str):
        raise ValueError(f"{self.spec.name} is streamed from disk, so its {name!r} split is not held as one "
                         f"tensor; the analyses that need it (mexlib.analysis) run on in-memory datasets")


class DataCache:
    """Each distinct data set on ``device``, loaded and moved there once: every run and seed
    that agrees on :meth:`DeviceData.key` shares its tensors (with its own ``seed``)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._data: dict[tuple, DeviceData | StreamingData] = {}

    def get(self, config: RunConfig) -> DeviceData | StreamingData:
        key = DeviceData.key(config)
        if key not in self._data:
            spec = dataset_spec(config.dataset)
            if spec.streamed:  # too large for memory: decoded batch by batch
                self._data[key] = StreamingData.from_config(config, self.device)
            elif spec.modality == "text":
                self._data[key] = DeviceData.from_text(config, _text_dataset(config.dataset, config.val_fraction),
                                                       self.device)
            else:
                self._data[key] = DeviceData.from_dataset(config, _dataset(config.dataset), self.device)
        return replace(self._data[key], seed=config.seed)


_DATASETS: dict[str, ImageData] = {}
_TEXTS: dict[tuple, TextData] = {}


def _text_dataset(name: str, val_fraction: float) -> TextData:
    if (name, val_fraction) not in _TEXTS:
        _TEXTS[name, val_fraction] = load_text_dataset(name, val_fraction)
    return _TEXTS[name, val_fraction]


def _dataset(name: str) -> ImageData:
    """The data set in memory, read from disk once per process (a notebook reads several stores)."""
    if name not in _DATASETS:
        _DATASETS[name] = load_dataset(name)
    return _DATASETS[name]


__all__ = ["DataCache", "DeviceData", "EVAL_BATCH_SIZE", "PHASE_SEED", "EVAL_CROP_RATIO", "IMAGENET_ARCHIVES", "OPENERS", "SeededSamples", "StreamLoader", "StreamingData",
           "default_workers", "eval_transform", "memory_format_for", "open_imagenet", "train_transform"]
