"""Tests of :mod:`mexlib.data`: loaders, splits, augmentation and batches.

Nothing here touches the network: every download URL is pointed at a local port nobody listens
on, so a test that would need a download fails fast instead of fetching. CIFAR is exercised
through torchvision's real loader and extraction code on tiny archives the tests write.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from mexlib import batches, data, paths
from mexlib.text_data import TEXT_LOADERS

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: a connection is refused at once
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _debian_available() -> bool:
    return all((DEBIAN_FOLDER / f"{name}.gz").is_file() for name in FASHION_FILES)


def _default_raw_available() -> bool:
    raw = paths.data_dir() / "FashionMNIST" / "raw"
    return all((raw / name).is_file() for name in FASHION_FILES)


# --- Fashion-MNIST on the real files ----------------------------------------------------------

@pytest.fixture(scope="module")
def fashion_default() -> data.ImageData:
    if not (_debian_available() or _default_raw_available()):
        pytest.skip(f"Fashion-MNIST is neither in {paths.data_dir()} nor in {DEBIAN_FOLDER} "
                    f"(apt-get install dataset-fashion-mnist); not downloading in tests")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torchvision.datasets.FashionMNIST, "mirrors", [UNREACHABLE])
        return data.load_dataset("fashion-mnist")


def test_fashion_mnist_shapes_labels_and_balance(fashion_default):
    d = fashion_default
    assert d.spec is data.dataset_spec("fashion-mnist")
    for images, labels, n in [(d.train_images, d.train_labels, 60000),
                              (d.test_images, d.test_labels, 10000)]:
        assert images.dtype == torch.uint8
        assert images.shape == (n, 1, 28, 28)
        assert images.is_contiguous()
        assert labels.dtype == torch.long
        assert labels.shape == (n,)
        assert int(labels.min()) == 0 and int(labels.max()) == 9
        counts = torch.bincount(labels, minlength=10)
        assert len(counts) == 10
        assert torch.all(counts == counts[0]), counts  # balanced: every class equally often
        assert int(counts.sum()) == n
    assert d.classes == list(torchvision.datasets.FashionMNIST.classes)
    assert len(d.classes) == d.spec.num_classes == 10
    # Real images, not zeros: pixel values span the full range.
    assert int(d.train_images.min()) == 0 and int(d.train_images.max()) == 255
    assert "train=60000" in repr(d) and "1x28x28" in repr(d)


def test_fashion_mnist_fresh_root_uses_debian_folder(fashion_default, tmp_path, monkeypatch):
    if not _debian_available():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FOLDER} is "
                    f"absent); `apt-get install dataset-fashion-mnist` to run this test")
    assert DEBIAN_FOLDER in data.SYSTEM_FOLDERS["fashion-mnist"]
    # No download possible: the data can only come from the system folder.
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [UNREACHABLE])
    root = tmp_path / "fresh"
    d = data.load_dataset("fashion-mnist", root=root)
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(FASHION_FILES)  # no leftovers
    assert torch.equal(d.train_images, fashion_default.train_images)
    assert torch.equal(d.train_labels, fashion_default.train_labels)
    assert torch.equal(d.test_images, fashion_default.test_images)
    assert torch.equal(d.test_labels, fashion_default.test_labels)
    assert d.classes == fashion_default.classes


def test_unpacking_one_file_twice_at_once_gives_one_whole_file(tmp_path, monkeypatch):
    """Two jobs on a fresh clone unpack Debian's archives together. Each must write its own
    temporary file: with one shared name, the first to finish moved the other's half-written
    file away, and the other died (FileNotFoundError), as a simulated AVX2 CI run showed."""
    payload = bytes(range(256)) * 4096
    source = tmp_path / "images.gz"
    with gzip.open(source, "wb") as f:
        f.write(payload)
    target = tmp_path / "raw" / "images"
    target.parent.mkdir()
    first_started, second_done = threading.Event(), threading.Event()
    copy = shutil.copyfileobj

    def first_pauses_halfway(fin, fout):
        if threading.current_thread().name == "first":
            fout.write(fin.read(1000))
            first_started.set()
            second_done.wait(10)
        copy(fin, fout)

    monkeypatch.setattr(data.shutil, "copyfileobj", first_pauses_halfway)
    errors = []

    def first():
        try:
            data._gunzip(source, target)
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    thread = threading.Thread(target=first, name="first")
    thread.start()
    assert first_started.wait(10)
    data._gunzip(source, target)  # the second, while the first is halfway
    second_done.set()
    thread.join(10)
    assert not errors, errors
    assert target.read_bytes() == payload
    assert [p.name for p in target.parent.iterdir()] == ["images"]  # no temporary file left


# --- missing datasets ---------------------------------------------------------------------------

def test_fashion_mnist_missing_explains_both_ways(tmp_path, monkeypatch):
    empty = tmp_path / "no-system-data"
    empty.mkdir()
    monkeypatch.setitem(data.SYSTEM_FOLDERS, "fashion-mnist", [empty])
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [UNREACHABLE])
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_dataset("fashion-mnist", root=tmp_path / "data")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "apt-get install dataset-fashion-mnist" in message  # the offline way
    assert "internet" in message and "download" in message  # the online way
    assert str(empty) in message  # says where it looked


@pytest.mark.parametrize("name, cls", [("cifar10", torchvision.datasets.CIFAR10),
                                       ("cifar100", torchvision.datasets.CIFAR100)])
def test_cifar_missing_explains_both_ways(name, cls, tmp_path, monkeypatch):
    monkeypatch.setattr(cls, "url", UNREACHABLE + cls.filename)
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_dataset(name, root=tmp_path)
    message = str(info.value)
    assert "internet" in message and "download" in message  # the online way
    assert f"copy {cls.filename}" in message  # the offline way
    assert str(tmp_path) in message


@pytest.mark.parametrize("name", ["imagenette", "tiny-imagenet"])
def test_image_folder_missing(name, tmp_path):
    spec = data.dataset_spec(name)
    with pytest.raises(data.DatasetNotFoundError, match="train"):
        data.load_dataset(name, root=tmp_path)
    # A train folder without its val folder is just as incomplete.
    (tmp_path / spec.folder / "train" / "a").mkdir(parents=True)
    with pytest.raises(data.DatasetNotFoundError, match="val"):
        data.load_dataset(name, root=tmp_path)


# --- CIFAR through torchvision's real loader and extraction -----------------------------------

def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _cifar_layout(name: str, rng: np.random.Generator) -> dict:
    """File contents of a tiny CIFAR-10/100 in the pickled format torchvision reads."""
    if name == "cifar10":
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]

        def batch(n, title):
            return {"batch_label": title, "labels": rng.integers(0, 10, n).tolist(),
                    "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                    "filenames": [f"img{i}.png" for i in range(n)]}

        return {"train": {f"data_batch_{i}": batch(3, f"training batch {i} of 5")
                          for i in range(1, 6)},
                "test": {"test_batch": batch(4, "testing batch 1 of 1")},
                "meta": ("batches.meta", {"label_names": names, "num_cases_per_batch": 3,
                                          "num_vis": 3072}),
                "label_key": "labels", "classes": names}
    names = [f"fine_{i:02d}" for i in range(100)]

    def batch(n, title):
        fine = rng.integers(0, 100, n)
        return {"batch_label": title, "fine_labels": fine.tolist(),
                "coarse_labels": (fine // 5).tolist(),  # differ from the fine labels
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "filenames": [f"img{i}.png" for i in range(n)]}

    return {"train": {"train": batch(7, "training batch 1 of 1")},
            "test": {"test": batch(5, "testing batch 1 of 1")},
            "meta": ("meta", {"fine_label_names": names,
                              "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)]}),
            "label_key": "fine_labels", "classes": names}


@pytest.mark.parametrize("name, cls", [("cifar10", torchvision.datasets.CIFAR10),
                                       ("cifar100", torchvision.datasets.CIFAR100)])
def test_cifar_extracts_and_loads_archive(name, cls, tmp_path, monkeypatch):
    layout = _cifar_layout(name, np.random.default_rng(7))
    spec = data.dataset_spec(name)
    assert spec.folder == cls.base_folder

    staging = tmp_path / "staging"
    batches = staging / cls.base_folder
    batches.mkdir(parents=True)
    meta_file, meta = layout["meta"]
    for filename, content in [*layout["train"].items(), *layout["test"].items(),
                              (meta_file, meta)]:
        with open(batches / filename, "wb") as f:
            pickle.dump(content, f)
    root = tmp_path / "data"
    root.mkdir()
    archive = root / cls.filename
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname=cls.base_folder)

    monkeypatch.setattr(cls, "url", UNREACHABLE + cls.filename)  # a fetch would fail
    monkeypatch.setattr(cls, "tgz_md5", _md5(archive))
    monkeypatch.setattr(cls, "train_list", [[f, _md5(batches / f)] for f in layout["train"]])
    monkeypatch.setattr(cls, "test_list", [[f, _md5(batches / f)] for f in layout["test"]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(batches / meta_file)})

    loaded = data.load_dataset(name, root=root)
    assert (root / cls.base_folder / meta_file).is_file()  # extracted next to the archive

    key = layout["label_key"]
    for split, images, labels in [("train", loaded.train_images, loaded.train_labels),
                                  ("test", loaded.test_images, loaded.test_labels)]:
        rows = np.concatenate([b["data"] for b in layout[split].values()])
        expected_labels = [label for b in layout[split].values() for label in b[key]]
        n = len(rows)
        assert images.dtype == torch.uint8
        assert images.shape == (n, 3, 32, 32)
        assert images.is_contiguous()
        # A CIFAR row is three 32x32 channel planes (red, green, blue), each row-major.
        for i, c, y, x in [(0, 0, 0, 0), (0, 0, 0, 31), (1, 1, 5, 7), (n - 1, 2, 31, 30),
                           (n - 1, 2, 30, 31)]:
            assert int(images[i, c, y, x]) == int(rows[i, c * 1024 + y * 32 + x])
        assert torch.equal(images, torch.from_numpy(rows).reshape(n, 3, 32, 32))
        assert labels.dtype == torch.long
        assert labels.tolist() == expected_labels
    assert loaded.classes == layout["classes"]
    assert len(loaded.classes) == spec.num_classes

    # Once extracted, the archive is no longer needed.
    archive.unlink()
    again = data.load_dataset(name, root=root)
    assert torch.equal(again.train_images, loaded.train_images)
    assert torch.equal(again.test_labels, loaded.test_labels)


# --- image folders ----------------------------------------------------------------------------

def _colour(k: int) -> tuple[int, int, int]:
    """A distinct solid colour for the k-th image written."""
    return (20 + 23 * k) % 256, (200 - 17 * k) % 256, (90 + 41 * k) % 256


def _solid(colour, height: int, width: int, grey: bool = False) -> torch.Tensor:
    if grey:
        return torch.full((1, height, width), colour[0], dtype=torch.uint8)
    return torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand(3, height, width).clone()


def _write(image: torch.Tensor, path: Path) -> None:
    # PIL writes the files, so the encoder is independent of the decoder under test.
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if image.shape[0] == 1 else array)
    if path.suffix.lower() == ".png":
        picture.save(path, format="PNG")
    else:
        picture.save(path, format="JPEG", quality=95)


def _assert_solid(images: torch.Tensor, colours: list[tuple[int, int, int]], tolerance: int):
    for image, colour in zip(images, colours, strict=True):
        expected = torch.tensor(colour).view(3, 1, 1)
        difference = (image.int() - expected).abs().max()
        assert int(difference) <= tolerance, (colour, image[:, 0, 0])


def test_imagenette_layout_resized_labelled_and_cached(tmp_path):
    spec = data.dataset_spec("imagenette")
    folder = tmp_path / spec.folder
    written = ["tench", "church", "parachute"]  # ImageFolder orders classes by name
    classes = sorted(written)
    sizes = [(40, 50), (50, 40), (33, 61), (128, 128)]
    expected = {"train": ([], []), "val": ([], [])}
    k = 0
    for split in ["train", "val"]:
        for name in written:
            for j, (h, w) in enumerate(sizes if split == "train" else sizes[:2]):
                grey = split == "train" and name == "church" and j == 1
                colour = _colour(k)
                if grey:
                    colour = (colour[0],) * 3
                suffix = ".JPEG" if j == 3 else ".png"  # Imagenette ships JPEGs
                _write(_solid(colour, h, w, grey), folder / split / name / f"img{j}{suffix}")
                expected[split][0].append((classes.index(name), j, colour, suffix))
                k += 1
    loaded = data.load_dataset("imagenette", root=tmp_path)
    assert loaded.classes == classes
    for split, images, labels in [("train", loaded.train_images, loaded.train_labels),
                                  ("val", loaded.test_images, loaded.test_labels)]:
        order = sorted(expected[split][0])  # by class, then by file name
        assert images.dtype == torch.uint8
        assert images.shape == (len(order), 3, spec.image_size, spec.image_size)
        assert labels.dtype == torch.long
        assert labels.tolist() == [label for label, *_ in order]
        png = [i for i, item in enumerate(order) if item[3] == ".png"]
        jpeg = [i for i, item in enumerate(order) if item[3] != ".png"]
        _assert_solid(images[png], [order[i][2] for i in png], tolerance=0)
        _assert_solid(images[jpeg], [order[i][2] for i in jpeg], tolerance=4)

    caches = list(folder.glob("*.pt"))
    assert len(caches) == 1 and str(spec.image_size) in caches[0].name
    # Without the images, only the cache can provide them.
    shutil.rmtree(folder / "train")
    shutil.rmtree(folder / "val")
    again = data.load_dataset("imagenette", root=tmp_path)
    assert torch.equal(again.train_images, loaded.train_images)
    assert torch.equal(again.train_labels, loaded.train_labels)
    assert torch.equal(again.test_images, loaded.test_images)
    assert torch.equal(again.test_labels, loaded.test_labels)
    assert again.classes == loaded.classes


def test_tiny_imagenet_layout(tmp_path):
    spec = data.dataset_spec("tiny-imagenet")
    folder = tmp_path / spec.folder
    wnids = ["n02124075", "n01443537", "n04067472"]
    classes = sorted(wnids)
    train_expected = []
    k = 0
    for wnid in wnids:
        for j in range(3):
            colour = _colour(k)
            k += 1
            _write(_solid(colour, 64 if j else 30, 64 if j else 45),
                   folder / "train" / wnid / "images" / f"{wnid}_{j}.JPEG")
            train_expected.append((classes.index(wnid), j, colour))
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")  # ignored
    # The validation images sit in one folder; the annotations give their classes, in an
    # order unrelated to the file names.
    val = [("val_2.JPEG", wnids[0]), ("val_0.JPEG", wnids[2]), ("val_3.JPEG", wnids[1]),
           ("val_1.JPEG", wnids[0])]
    val_colours = []
    for filename, _ in val:
        colour = _colour(k)
        k += 1
        _write(_solid(colour, 64, 64), folder / "val" / "images" / filename)
        val_colours.append(colour)
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"{filename}\t{wnid}\t0\t0\t10\t10\n" for filename, wnid in val))

    loaded = data.load_dataset("tiny-imagenet", root=tmp_path)
    assert loaded.classes == classes
    train_expected.sort()
    assert loaded.train_images.shape == (9, 3, 64, 64)
    assert loaded.train_images.dtype == torch.uint8
    assert loaded.train_labels.tolist() == [label for label, *_ in train_expected]
    _assert_solid(loaded.train_images, [c for *_, c in train_expected], tolerance=4)
    assert loaded.test_images.shape == (4, 3, 64, 64)
    assert loaded.test_labels.tolist() == [classes.index(wnid) for _, wnid in val]
    _assert_solid(loaded.test_images, val_colours, tolerance=4)
    assert len(list(folder.glob("*.pt"))) == 1


# --- splits ----------------------------------------------------------------------------------

def _unequal_labels() -> torch.Tensor:
    sizes = [50, 23, 7, 120, 1, 35]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))]


def test_stratified_split_per_class_counts_and_partition():
    labels = _unequal_labels()
    for fraction in [0.1, 0.25, 0.5]:
        rest, held = data.stratified_split(labels, fraction, seed=0)
        for c in torch.unique(labels):
            n_c = int((labels == c).sum())
            assert int((labels[held] == c).sum()) == round(fraction * n_c), (fraction, int(c))
        # Disjoint, covering everything, sorted.
        assert torch.equal(torch.sort(torch.cat([rest, held])).values, torch.arange(len(labels)))
        assert torch.equal(rest, torch.sort(rest).values)
        assert torch.equal(held, torch.sort(held).values)
        assert rest.dtype == held.dtype == torch.long


def test_stratified_split_seeded_and_independent_of_global_rng():
    labels = _unequal_labels()
    torch.manual_seed(1)
    state = torch.get_rng_state()
    rest_a, held_a = data.stratified_split(labels, 0.2, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    torch.manual_seed(12345)
    rest_b, held_b = data.stratified_split(labels, 0.2, seed=5)
    assert torch.equal(rest_a, rest_b) and torch.equal(held_a, held_b)
    _, held_c = data.stratified_split(labels, 0.2, seed=6)
    assert len(held_c) == len(held_a)
    assert not torch.equal(held_a, held_c)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        data.stratified_split(torch.arange(10) % 2, fraction, seed=0)


def _image_data(labels: torch.Tensor) -> data.ImageData:
    spec = data.dataset_spec("fashion-mnist")
    n = len(labels)
    return data.ImageData(spec, torch.zeros(n, 1, 2, 2, dtype=torch.uint8), labels,
                          torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.arange(3),
                          [str(i) for i in range(10)])


def test_make_splits_train_size_keeps_stratified_subset():
    labels = torch.arange(1000) % 10
    labels[:300] = 3  # unequal classes
    d = _image_data(labels)
    full = data.make_splits(d, val_fraction=0.1, seed=0)
    assert torch.equal(torch.sort(torch.cat([full.train, full.val])).values, torch.arange(1000))
    for train_size in [450, 90]:
        capped = data.make_splits(d, val_fraction=0.1, seed=0, train_size=train_size)
        assert torch.equal(capped.val, full.val)  # the same validation split whatever the cap
        assert set(capped.train.tolist()) <= set(full.train.tolist())
        assert len(set(capped.train.tolist())) == len(capped.train)
        assert abs(len(capped.train) - train_size) <= 10  # per-class rounding only
        fraction = train_size / len(full.train)
        for c in range(10):
            n_c = int((labels[full.train] == c).sum())
            kept = int((labels[capped.train] == c).sum())
            assert math.floor(fraction * n_c) <= kept <= math.ceil(fraction * n_c)
        assert len(capped.train) == train_size
        again = data.make_splits(d, val_fraction=0.1, seed=0, train_size=train_size)
        assert torch.equal(again.train, capped.train)
    # A cap at or above the available images keeps them all.
    assert torch.equal(data.make_splits(d, 0.1, 0, train_size=10_000).train, full.train)
    with pytest.raises(ValueError, match="train_size"):
        data.make_splits(d, 0.1, 0, train_size=0)


def test_make_splits_val_size_keeps_a_stratified_subset_of_validation():
    labels = torch.arange(2000) % 10
    labels[:600] = 7  # unequal classes
    d = _image_data(labels)
    full = data.make_splits(d, val_fraction=0.1, seed=0)
    capped = data.make_splits(d, val_fraction=0.1, seed=0, val_size=50, train_size=300)
    assert torch.equal(capped.train, data.make_splits(d, 0.1, 0, train_size=300).train)
    assert len(capped.val) == 50 and set(capped.val.tolist()) <= set(full.val.tolist())
    fraction = 50 / len(full.val)
    for c in range(10):
        n_c = int((labels[full.val] == c).sum())
        assert math.floor(fraction * n_c) <= int((labels[capped.val] == c).sum()) <= math.ceil(fraction * n_c)
    assert torch.equal(data.make_splits(d, 0.1, 0, val_size=10_000).val, full.val)
    with pytest.raises(ValueError, match="val_size"):
        data.make_splits(d, 0.1, 0, val_size=0)


def test_make_splits_train_size_is_a_cap():
    labels = torch.arange(33) % 3  # 3 classes of 11
    d = _image_data(labels)
    # 30 remain for training (10 per class); 14 cannot split evenly, yet exactly 14 are kept.
    split = data.make_splits(d, val_fraction=0.1, seed=0, train_size=14)
    assert len(split.train) == 14
    assert sorted(torch.bincount(labels[split.train]).tolist()) == [4, 5, 5]


# --- augmentation ----------------------------------------------------------------------------

def _random_images(n=64, c=3, h=8, w=10, seed=0) -> torch.Tensor:
    # Values from 1: a zero in the output can only come from the padding.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def _crop_matches(original: torch.Tensor, out: torch.Tensor, p: int):
    """The (dy, dx, flipped) for which ``out`` is a window of the zero-padded ``original``."""
    h, w = original.shape[-2:]
    padded = torch.nn.functional.pad(original, (p, p, p, p))
    found = []
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            window = padded[:, dy:dy + h, dx:dx + w]
            if torch.equal(out, window):
                found.append((dy, dx, False))
            if torch.equal(out, window.flip(-1)):
                found.append((dy, dx, True))
    return found


def test_batch_augment_crop_is_a_window_of_the_padded_image():
    images = _random_images()
    p = 2
    out = batches.BatchAugment(crop_padding=p, flip=False)(images, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    offsets = []
    for original, augmented in zip(images, out):
        matches = [(dy, dx) for dy, dx, flipped in _crop_matches(original, augmented, p)
                   if not flipped]
        assert len(matches) == 1
        offsets.append(matches[0])
    # Each sample draws its own offset, over the whole range in both directions.
    dys, dxs = zip(*offsets)
    assert min(dys) == 0 and max(dys) == 2 * p
    assert min(dxs) == 0 and max(dxs) == 2 * p
    assert len(set(offsets)) > 5


def test_batch_augment_crop_and_flip():
    images = _random_images(seed=1)
    p = 1
    out = batches.BatchAugment(crop_padding=p, flip=True)(images, torch.Generator().manual_seed(4))
    flips = []
    for original, augmented in zip(images, out):
        matches = _crop_matches(original, augmented, p)
        assert len(matches) == 1, matches
        flips.append(matches[0][2])
    assert 0 < sum(flips) < len(flips)


def test_batch_augment_flip_only_flips_horizontally():
    images = _random_images(seed=2)
    out = batches.BatchAugment(crop_padding=0, flip=True)(images, torch.Generator().manual_seed(1))
    flipped = 0
    for original, augmented in zip(images, out):
        if torch.equal(augmented, original):
            continue
        assert torch.equal(augmented, original.flip(-1))
        flipped += 1
    assert 0 < flipped < len(images)


def test_batch_augment_identity_and_determinism():
    images = _random_images(n=16, seed=3)
    same = batches.BatchAugment()(images, torch.Generator().manual_seed(0))
    assert torch.equal(same, images)
    augment = batches.BatchAugment(crop_padding=3, flip=True)
    a = augment(images, torch.Generator().manual_seed(9))
    b = augment(images, torch.Generator().manual_seed(9))
    c = augment(images, torch.Generator().manual_seed(10))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    grey = _random_images(n=8, c=1, h=28, w=28)
    out = batches.BatchAugment.for_dataset(data.dataset_spec("fashion-mnist"))(
        grey, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == grey.shape


def test_batch_augment_trivial_augment_is_seeded_by_our_generator():
    images = _random_images(n=16, h=16, w=16, seed=5)
    augment = batches.BatchAugment(crop_padding=2, flip=True, trivial_augment=True, policy_group=4)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = augment(images, torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    b = augment(images, torch.Generator().manual_seed(2))
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "imagenette"])
def test_normalize(name):
    spec = data.dataset_spec(name)
    images = _random_images(n=4, c=spec.channels, h=5, w=6)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    expected = (images.double() / 255 - mean.double()) / std.double()
    out = batches.Normalize(spec)(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)
    out64 = batches.Normalize(spec, dtype=torch.float64)(images)
    assert out64.dtype == torch.float64
    # The constants are computed in float32, so float64 output is only that accurate.
    torch.testing.assert_close(out64, expected, atol=1e-6, rtol=0)


# --- batches ---------------------------------------------------------------------------------

def _loader_data(n=23):
    spec = data.dataset_spec("fashion-mnist")
    images = _random_images(n=n, c=1, h=4, w=4, seed=8)
    return spec, images, torch.arange(n)  # a sample's label is its index


def _epoch_order(loader) -> list[int]:
    return [i for _, labels in loader for i in labels.tolist()]


def test_batch_loader_shuffle_covers_every_sample_once_per_epoch():
    spec, images, labels = _loader_data()
    normalize = batches.Normalize(spec)
    loader = batches.BatchLoader(images, labels, 5, normalize, shuffle=True, seed=3)
    assert len(loader) == 5
    sizes = [len(y) for _, y in loader]
    assert sizes == [5, 5, 5, 5, 3]
    first = _epoch_order(loader)
    assert sorted(first) == list(range(23))
    assert first != list(range(23))
    assert _epoch_order(loader) == first  # same epoch, same order
    loader.set_epoch(1)
    second = _epoch_order(loader)
    assert sorted(second) == list(range(23)) and second != first
    # A loader resumed at epoch 1 sees the batches of an uninterrupted run.
    resumed = batches.BatchLoader(images, labels, 5, normalize, shuffle=True, seed=3)
    resumed.set_epoch(1)
    assert _epoch_order(resumed) == second
    other_seed = batches.BatchLoader(images, labels, 5, normalize, shuffle=True, seed=4)
    assert _epoch_order(other_seed) != first
    # Without augmentation the images are the normalised originals of their labels.
    for x, y in loader:
        torch.testing.assert_close(x, normalize(images[y]), atol=0, rtol=0)


def test_batch_loader_drop_last():
    spec, images, labels = _loader_data()
    loader = batches.BatchLoader(images, labels, 5, batches.Normalize(spec), shuffle=True,
                              drop_last=True)
    assert len(loader) == 4
    seen = _epoch_order(loader)
    assert [len(y) for _, y in loader] == [5] * 4
    assert len(seen) == 20 and len(set(seen)) == 20
    exact = batches.BatchLoader(images[:20], labels[:20], 5, batches.Normalize(spec), drop_last=True)
    assert len(exact) == 4
    small = batches.BatchLoader(images[:3], labels[:3], 5, batches.Normalize(spec), drop_last=True)
    assert len(small) == 0 and list(small) == []
    with pytest.raises(ValueError, match="batch_size"):
        batches.BatchLoader(images, labels, 0, batches.Normalize(spec))


def test_batch_loader_validation_batches_are_normalised_originals():
    spec, images, labels = _loader_data()
    normalize = batches.Normalize(spec)
    loader = batches.BatchLoader(images, labels, 10, normalize)  # shuffle=False, augment=None
    assert len(loader) == 3
    drawn = list(loader)
    assert torch.equal(torch.cat([y for _, y in drawn]), labels)
    torch.testing.assert_close(torch.cat([x for x, _ in drawn]), normalize(images),
                               atol=0, rtol=0)
    loader.set_epoch(7)
    assert torch.equal(torch.cat([x for x, _ in loader]), torch.cat([x for x, _ in drawn]))


def test_batch_loader_augmentation_is_reproducible_per_epoch():
    spec, images, labels = _loader_data()
    augment = batches.BatchAugment(crop_padding=1, flip=True)
    loader = batches.BatchLoader(images, labels, 8, batches.Normalize(spec), shuffle=True,
                              augment=augment, seed=1)
    first = [x for x, _ in loader]
    again = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    plain = batches.BatchLoader(images, labels, 8, batches.Normalize(spec), shuffle=True, seed=1)
    assert _epoch_order(plain) == _epoch_order(loader)  # augmentation keeps the order
    assert any(not torch.equal(a, b) for a, (b, _) in zip(first, plain))


# --- specs -----------------------------------------------------------------------------------

def test_dataset_spec_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        data.dataset_spec("nope")
    message = str(info.value)
    assert "nope" in message
    for name in ["fashion-mnist", "cifar10", "cifar100", "imagenette", "tiny-imagenet"]:
        assert name in message
    with pytest.raises(ValueError, match="valid datasets"):
        data.load_dataset("nope")


def test_specs_are_consistent():
    for name, spec in data.DATASETS.items():
        assert spec.name == name
        assert len(spec.mean) == len(spec.std) == spec.channels
        # a streamed one has its own reader (mexlib.device_data), a text one its loader in mexlib.text_data
        assert (name in data._LOADERS) != (spec.streamed or spec.modality == "text")
        assert (name in TEXT_LOADERS) == (spec.modality == "text") == (spec.max_tokens > 0)
    with pytest.raises(ValueError, match="holds texts, not images.*image datasets: cifar10"):
        data.load_dataset("wordnet-supersenses")


# --- corrupt datasets ---------------------------------------------------------------------------

def test_fashion_mnist_files_cut_short_are_reported_as_corrupt_not_missing(tmp_path, monkeypatch):
    """The four idx files are where torchvision looks, but each holds only its first bytes: the
    error names them and says they are corrupt (nothing is downloaded)."""
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [UNREACHABLE])
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for url, _ in torchvision.datasets.FashionMNIST.resources:
        name = Path(url).name.removesuffix(".gz")
        (raw / name).write_bytes(b"\x00\x00\x08\x03\x00\x00")  # an idx header cut short
    with pytest.raises(data.DatasetCorruptError) as info:
        data.load_dataset("fashion-mnist", root=tmp_path)
    message = str(info.value)
    assert "on disk but cannot be read" in message and str(raw / "train-images-idx3-ubyte") in message
    assert "Delete them" in message


def test_a_cifar_archive_that_is_not_cifar_is_reported_as_corrupt(tmp_path, monkeypatch):
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "url", UNREACHABLE + cls.filename)
    (tmp_path / cls.filename).write_bytes(b"not an archive")
    with pytest.raises(data.DatasetCorruptError) as info:
        data.load_dataset("cifar10", root=tmp_path)
    assert f"{tmp_path / cls.filename} is on disk but is not cifar10's archive" in str(info.value)
