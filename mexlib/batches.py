"""Batches on the training device: augmentation of ``uint8`` image batches (:class:`BatchAugment`),
normalisation (:class:`Normalize`) and the loader that draws them in a seeded order
(:class:`BatchLoader`), the same on every resume. Data sets themselves: :mod:`mexlib.data`."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from .data import DatasetSpec

class BatchAugment:
    """Training augmentation applied to a whole ``uint8`` batch on its device.

    Random crop after zero padding (each sample its own offset) and random horizontal flips,
    as torchvision's ``RandomCrop(padding)`` and ``RandomHorizontalFlip`` do per sample;
    optionally TrivialAugmentWide (the paper profile), drawn per group of ``policy_group``
    samples because torchvision applies one operation to a whole tensor.
    """

    def __init__(self, crop_padding: int = 0, flip: bool = False, trivial_augment: bool = False,
                 policy_group: int = 8):
        self.crop_padding = crop_padding
        self.flip = flip
        self.trivial_augment = None
        if trivial_augment:
            from torchvision.transforms import v2
            self.trivial_augment = v2.TrivialAugmentWide()
        self.policy_group = policy_group

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        n, _, h, w = images.shape
        dev = images.device
        if self.trivial_augment is not None:
            # torchvision draws its operations from the global generator: seed it from ours.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
                images = torch.cat([self.trivial_augment(chunk)
                                    for chunk in images.split(self.policy_group)])
        if self.crop_padding:
            p = self.crop_padding
            padded = torch.nn.functional.pad(images, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(dev)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(dev)
            rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
            batch = torch.arange(n, device=dev)[:, None, None, None]
            channel = torch.arange(images.shape[1], device=dev)[None, :, None, None]
            images = padded[batch, channel, rows, cols]
        if self.flip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(dev)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images

    @classmethod
    def for_dataset(cls, spec: DatasetSpec, trivial_augment: bool = False) -> "BatchAugment":
        return cls(spec.crop_padding, spec.flip, trivial_augment)


class Normalize:
    """``uint8`` images to floats normalised by the dataset's channel mean and std."""

    def __init__(self, spec: DatasetSpec, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        shape = (1, len(spec.mean), 1, 1)
        mean = torch.tensor(spec.mean, dtype=torch.float64)
        std = torch.tensor(spec.std, dtype=torch.float64)
        self.scale = (1.0 / (255.0 * std)).view(shape).to(device, dtype)
        self.shift = (-mean / std).view(shape).to(device, dtype)
        self.dtype = dtype

    def __call__(self, images: Tensor) -> Tensor:
        return images.to(self.dtype) * self.scale + self.shift


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's order and augmentation: it depends only on ``(seed, epoch)``,
    so a run resumed at ``epoch`` sees the batches an uninterrupted one would have seen."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


class BatchLoader:
    """Batches of (normalised images, labels) from tensors already on the training device.

    The order of epoch ``e`` depends only on ``(seed, e)`` (set with :meth:`set_epoch`, as
    with ``DistributedSampler``), so a run resumed at epoch ``e`` sees exactly the batches an
    uninterrupted run would have seen.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, normalize: Normalize,
                 shuffle: bool = False, augment: BatchAugment | None = None,
                 drop_last: bool = False, seed: int = 0,
                 memory_format: torch.memory_format = torch.contiguous_format):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.normalize = normalize
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.seed, self.epoch = seed, 0
        self.memory_format = memory_format

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return batch_count(len(self.labels), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        generator = epoch_generator(self.seed, self.epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=generator).to(self.labels.device) if self.shuffle else None
        for i in range(len(self)):
            index = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is not None:
                rows = order[index]
                images, labels = self.images[rows], self.labels[rows]
            else:
                images, labels = self.images[index], self.labels[index]
            if self.augment is not None:
                images = self.augment(images, generator)
            x = self.normalize(images).contiguous(memory_format=self.memory_format)
            yield x, labels
