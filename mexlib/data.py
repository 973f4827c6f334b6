"""Datasets as in-memory tensors and a stratified validation split (batches and their
augmentation: :mod:`mexlib.batches`).

Images are held as ``uint8`` tensors of shape ``[N, C, H, W]`` (all the study's datasets fit in
memory) and moved to the training device once. Augmentation runs per batch on that device, on
the ``uint8`` images, before normalisation, so a crop's padding is black as in torchvision's
``RandomCrop``; validation and test batches are only normalised.

Where the data come from (see :func:`load_dataset`):

* Fashion-MNIST (the default): ``<data>/FashionMNIST/raw``, then the idx files of Debian's
  ``dataset-fashion-mnist`` package, then torchvision's download.
* CIFAR-10 / CIFAR-100: torchvision's loader and download into ``<data>``.
* Image folders (Imagenette, Tiny ImageNet layouts) under ``<data>/<name>``, decoded once,
  resized and cached as a tensor file next to the images.
* ImageNet-1k is too large for memory: :mod:`mexlib.device_data` reads it from disk.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from . import paths
from .registry import lookup


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither on disk nor downloadable; the message says how to get it."""


class DatasetCorruptError(RuntimeError):
    """A dataset's files are on disk but cannot be read (cut short, or not what they should be);
    the message names them and says how to get them again."""


@dataclass(frozen=True)
class DatasetSpec:
    """What the rest of the package needs to know about a dataset."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int  # random-crop padding used for training augmentation (0: no crop)
    flip: bool  # random horizontal flips during training
    folder: str  # subfolder of the data folder
    streamed: bool = False  # too large for memory: read from disk batch by batch (mexlib.device_data)
    # "text": labelled texts (mexlib.text_data), fed to a text encoder as token ids cut at max_tokens;
    # channels, image size, mean, std and the augmentation do not apply
    modality: str = "image"
    max_tokens: int = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape as a model takes it: ``(C, H, W)``, or ``(max_tokens,)`` for text."""
        if self.modality == "text":
            return (self.max_tokens,)
        return (self.channels, self.image_size, self.image_size)


@dataclass
class ImageData:
    """A dataset's train and test images as ``uint8`` tensors ``[N, C, H, W]``."""

    spec: DatasetSpec
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.train_images.shape[1:])
        return (f"ImageData({self.spec.name!r}, train={len(self.train_labels)}, "
                f"test={len(self.test_labels)}, classes={len(self.classes)}, image={shape})")


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), 2, True, "FashionMNIST"),
        DatasetSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                    4, True, "cifar-10-batches-py"),
        DatasetSpec("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                    4, True, "cifar-100-python"),
        DatasetSpec("imagenette", 10, 3, 128, _IMAGENET_MEAN, _IMAGENET_STD, 16, True,
                    "imagenette"),
        DatasetSpec("tiny-imagenet", 200, 3, 64, _IMAGENET_MEAN, _IMAGENET_STD, 8, True,
                    "tiny-imagenet-200"),
        # crop_padding 0: streamed data are cropped by RandomResizedCrop (mexlib.device_data)
        DatasetSpec("imagenet", 1000, 3, 224, _IMAGENET_MEAN, _IMAGENET_STD, 0, True, "imagenet",
                    streamed=True),
        # texts: 32 tokens hold 90 % of WordNet's glosses whole (median 16); 20 Newsgroups' posts are
        # longer, so the paper's BERT reads 256 of their tokens
        DatasetSpec("wordnet-supersenses", 45, 0, 0, (), (), 0, False, "wordnet", modality="text", max_tokens=32),
        DatasetSpec("20newsgroups", 20, 0, 0, (), (), 0, False, "20newsgroups", modality="text", max_tokens=256),
    ]
}

#: Folders outside the data folder where a system package may have installed a dataset.
SYSTEM_FOLDERS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a dataset by name; an unknown name raises with the valid ones."""
    return lookup(DATASETS, name, "dataset")


def load_dataset(name: str = "fashion-mnist", root: str | Path | None = None) -> ImageData:
    """Load a dataset into memory, fetching it first if needed (see the module docstring)."""
    spec = dataset_spec(name)
    if spec.modality == "text":
        raise ValueError(f"{name} holds texts, not images: load it with mexlib.text_data.load_text_dataset "
                         f"(the run store does); image datasets: "
                         f"{', '.join(sorted(n for n, s in DATASETS.items() if s.modality == 'image'))}")
    if spec.streamed:
        raise ValueError(f"{name} is streamed from disk, not loaded into memory: open it with "
                         f"mexlib.device_data.StreamingData (the run store does); datasets held in memory: "
                         f"{', '.join(sorted(n for n, s in DATASETS.items() if not s.streamed and s.modality == 'image'))}")
    root = Path(root) if root is not None else paths.data_dir()
    root.mkdir(parents=True, exist_ok=True)
    loader = _LOADERS[name]
    return loader(spec, root)


# --- loaders -------------------------------------------------------------------------------

def _load_fashion_mnist(spec: DatasetSpec, root: Path) -> ImageData:
    import torchvision  # here, not at the top: it takes a second, and stored runs need none of it

    cls = torchvision.datasets.FashionMNIST
    raw = root / spec.folder / "raw"
    archives = [Path(url).name for url, _ in cls.resources]
    tried = [str(raw)]
    if not _torchvision_has_files(cls, root):
        for folder in SYSTEM_FOLDERS.get(spec.name, []):
            tried.append(str(folder))
            if all((folder / a).is_file() for a in archives):
                # Debian recompresses the archives, so their checksums differ from those
                # torchvision verifies; decompress them into the idx files it reads instead.
                raw.mkdir(parents=True, exist_ok=True)
                for a in archives:
                    _gunzip(folder / a, raw / Path(a).stem)
                break
    present = _torchvision_has_files(cls, root)
    try:
        # torchvision reads the idx files when present and downloads them otherwise.
        train = cls(root, train=True, download=True)
        test = cls(root, train=False, download=True)
    except Exception as error:
        if present:  # the files were there: they are what failed, not the download
            files = [str(raw / Path(a).stem) for a in archives]
            raise DatasetCorruptError(
                f"Fashion-MNIST's files are on disk but cannot be read ({type(error).__name__}: {error}): "
                f"{', '.join(files)}. Delete them (and {raw}'s other files) to unpack or download them again."
            ) from error
        raise DatasetNotFoundError(
            f"Fashion-MNIST was not found (looked in: {', '.join(tried)}) and torchvision "
            f"could not download it ({type(error).__name__}: {error}).\n"
            f"Get it one of two ways:\n"
            f"  * offline, on Debian or Ubuntu: `sudo apt-get install dataset-fashion-mnist` "
            f"(installs the idx files to /usr/share/datasets/fashion-mnist, found "
            f"automatically), or copy the four files {', '.join(archives)} into {raw};\n"
            f"  * online: run `python -c \"import mexlib.data as d; d.load_dataset('fashion-mnist')\"`"
            f" on a machine with internet access; torchvision downloads it into {root}."
        ) from error
    return ImageData(spec, train.data.unsqueeze(1).contiguous(), train.targets.long(),
                     test.data.unsqueeze(1).contiguous(), test.targets.long(), list(train.classes))


def _gunzip(source: Path, target: Path) -> None:
    """Unpack ``source`` to ``target`` through a temporary file of this process's own, moved into
    place at once: processes that unpack the same file together (two jobs on a fresh clone)
    each write their own copy, and a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with gzip.open(source, "rb") as fin, os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _verified(path: Path, md5: str) -> bool:
    import hashlib

    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == md5


def _torchvision_has_files(cls, root: Path) -> bool:
    probe = cls.__new__(cls)
    probe.root = str(root)
    return probe._check_exists()


def _load_cifar(spec: DatasetSpec, root: Path) -> ImageData:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if spec.name == "cifar10" else torchvision.datasets.CIFAR100
    archive = root / cls.filename
    probe = cls.__new__(cls)
    probe.root = str(root)
    if archive.is_file() and not probe._check_integrity() and not _verified(archive, cls.tgz_md5):
        raise DatasetCorruptError(f"{archive} is on disk but is not {spec.name}'s archive (its MD5 is not "
                                  f"{cls.tgz_md5}): cut short or another file. Delete it to download it again, "
                                  f"or copy the archive from {cls.url} in its place.")
    try:
        train = cls(root, train=True, download=True)
        test = cls(root, train=False, download=True)
    except Exception as error:
        raise DatasetNotFoundError(
            f"{spec.name} was not found in {root / spec.folder} and torchvision could not "
            f"download it ({type(error).__name__}: {error}).\n"
            f"Get it one of two ways:\n"
            f"  * online: rerun on a machine with internet access; torchvision downloads "
            f"{cls.filename} into {root};\n"
            f"  * offline: copy {cls.filename} (from {cls.url}) into {root}; it is verified "
            f"and extracted on first use."
        ) from error

    def to_tensor(ds):
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(ds.targets, dtype=torch.long)

    train_images, train_labels = to_tensor(train)
    test_images, test_labels = to_tensor(test)
    return ImageData(spec, train_images, train_labels, test_images, test_labels,
                     list(train.classes))


def _load_image_folder(spec: DatasetSpec, root: Path) -> ImageData:
    """Imagenette layout (``train/<class>/*``, ``val/<class>/*``) or Tiny ImageNet's
    (``train/<wnid>/images/*``, ``val/images/*`` with ``val/val_annotations.txt``)."""
    folder = root / spec.folder
    cache = folder / f"mexlib-tensors-{spec.image_size}px.pt"
    if cache.is_file():
        stored = torch.load(cache, weights_only=True)
        return ImageData(spec, stored["train_images"], stored["train_labels"],
                         stored["test_images"], stored["test_labels"], stored["classes"])
    if not (folder / "train").is_dir() or not (folder / "val").is_dir():
        raise DatasetNotFoundError(
            f"{spec.name} was not found: expected the folders {folder / 'train'} and "
            f"{folder / 'val'}. Download and unpack the dataset there (Imagenette: "
            f"https://github.com/fastai/imagenette; Tiny ImageNet: "
            f"http://cs231n.stanford.edu/tiny-imagenet-200.zip), keeping its folder layout.")
    import torchvision

    train = torchvision.datasets.ImageFolder(folder / "train")
    annotations = folder / "val" / "val_annotations.txt"
    if annotations.is_file():
        test_samples = []
        for line in annotations.read_text().splitlines():
            if line.strip():
                filename, wnid = line.split("\t")[:2]
                test_samples.append((folder / "val" / "images" / filename, train.class_to_idx[wnid]))
    else:
        test = torchvision.datasets.ImageFolder(folder / "val")
        if test.classes != train.classes:
            raise ValueError(f"{folder}: the classes of val/ differ from those of train/")
        test_samples = test.samples
    train_images, train_labels = _decode_resized(train.samples, spec.image_size)
    test_images, test_labels = _decode_resized(test_samples, spec.image_size)
    data = ImageData(spec, train_images, train_labels, test_images, test_labels, train.classes)
    tmp = cache.with_suffix(".tmp")
    torch.save({"train_images": train_images, "train_labels": train_labels,
                "test_images": test_images, "test_labels": test_labels,
                "classes": train.classes}, tmp)
    tmp.replace(cache)
    return data


def _decode_resized(samples, size: int) -> tuple[Tensor, Tensor]:
    from torchvision.transforms import v2

    images = torch.empty(len(samples), 3, size, size, dtype=torch.uint8)
    for i, (path, _) in enumerate(samples):
        with Image.open(path) as pil:
            image = v2.functional.pil_to_tensor(pil.convert("RGB"))
        image = v2.functional.resize(image, size, antialias=True)
        images[i] = v2.functional.center_crop(image, size)
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    return images, labels


_LOADERS: dict[str, Callable[[DatasetSpec, Path], ImageData]] = {
    "fashion-mnist": _load_fashion_mnist,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "imagenette": _load_image_folder,
    "tiny-imagenet": _load_image_folder,
}


# --- splits ----------------------------------------------------------------------------------

def stratified_split(labels: Tensor, fraction: float, seed: int,
                     count: int | None = None) -> tuple[Tensor, Tensor]:
    """Split sample indices into (rest, held_out), holding out ``fraction`` of every class.

    With ``count``, exactly ``count`` samples are held out, shared among classes in proportion
    to their sizes (largest remainders get the leftover places). Depends only on the labels,
    the fraction and the seed (its own generator, never the global one), so every run of a
    study sees the same split. Both index tensors are sorted.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    classes, sizes = torch.unique(labels, return_counts=True)
    if count is None:
        take = [int(round(fraction * int(n))) for n in sizes]
    else:
        shares = sizes.double() * count / len(labels)
        take = shares.floor().long()
        leftover = count - int(take.sum())
        take[torch.argsort(shares - take, descending=True, stable=True)[:leftover]] += 1
        take = take.tolist()
    held_out = []
    for cls, k in zip(classes, take):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held_out.append(members[:k])
    held = torch.sort(torch.cat(held_out)).values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held] = False
    return torch.nonzero(mask).flatten(), held


@dataclass
class Splits:
    """Index tensors into ``ImageData.train_*`` for training and validation."""

    train: Tensor
    val: Tensor


def make_splits(data: ImageData, val_fraction: float = 0.1, seed: int = 0,
                train_size: int | None = None, val_size: int | None = None) -> Splits:
    """Hold out a stratified validation split; optionally keep a stratified subset of each part.

    ``train_size`` caps the number of training images (the cpu profile trains on a subset);
    the validation split is the same whatever the cap. ``val_size`` likewise caps the
    validation images (the smoke profile validates on a subset); the training images are the
    same whatever it is.
    """
    return split_indices(data.train_labels, val_fraction, seed, train_size, val_size)


def split_indices(labels: Tensor, val_fraction: float = 0.1, seed: int = 0,
                  train_size: int | None = None, val_size: int | None = None) -> Splits:
    """:func:`make_splits` from the training labels alone (a streamed dataset's, whose images
    are not in memory)."""
    train, val = stratified_split(labels, val_fraction, seed)
    return Splits(train=stratified_subset(labels, train, train_size, seed + 1, "train_size"),
                  val=stratified_subset(labels, val, val_size, seed + 2, "val_size"))


def stratified_subset(labels: Tensor, indices: Tensor, size: int | None, seed: int,
                       name: str) -> Tensor:
    if size is None or size >= len(indices):
        return indices
    if size <= 0:
        raise ValueError(f"{name} must be positive, got {size}")
    _, keep = stratified_split(labels[indices], size / len(indices), seed, count=size)
    return indices[keep]
