"""ImageNet-1k streamed from disk (mexlib.device_data), on a miniature ImageNet that the tests write
in torchvision's unpacked layout (meta.bin, train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) and read
through torchvision's own ImageNet class."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mexlib import data as data_module
from mexlib.config import make_config
from mexlib.data import DatasetNotFoundError, dataset_spec
from mexlib.store import RunStore
from mexlib.device_data import IMAGENET_ARCHIVES, OPENERS, StreamingData, default_workers

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]
TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 3
#: the colour of every class's first training image, which is one flat colour
FLAT = (200, 40, 120)


def write_imagenet(root):
    """A 4-class ImageNet in the layout torchvision's ImageNet unpacks its archives to; images
    of varied sizes and aspect ratios, as ImageNet's are."""
    folder = root / "imagenet"
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c, wnid in enumerate(WNIDS):
            (folder / split / wnid).mkdir(parents=True)
            for i in range(count):
                h, w = 40 + 7 * i, 64 - 3 * i
                if split == "train" and i == 0:
                    pixels = torch.tensor(FLAT, dtype=torch.uint8).view(1, 1, 3).expand(h, w, 3)
                else:
                    pixels = torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8)
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{c * 100 + i:08d}.JPEG"
                Image.fromarray(pixels.contiguous().numpy()).save(folder / split / wnid / name, quality=95)
    torch.save(({w: (f"class {i}",) for i, w in enumerate(WNIDS)}, [w for w in WNIDS for _ in range(VAL_PER_CLASS)]),
               folder / "meta.bin")
    return root


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    return write_imagenet(tmp_path_factory.mktemp("data"))


def _config(**overrides):
    values = dict(dataset="imagenet", arch="vit-smoke", val_fraction=0.2, train_size=None, val_size=None,
                  test_size=None)
    return make_config("smoke", **{**values, **overrides})


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_splits_are_stratified_disjoint_and_capped(imagenet_root):
    data = StreamingData.from_config(_config(test_size=4), "cpu", root=imagenet_root, workers=0)
    labels = torch.tensor([label for _, label in data.train_samples])
    assert len(data.train_samples) == TRAIN_PER_CLASS * len(WNIDS)
    assert not set(data.train_indices.tolist()) & set(data.val_indices.tolist())
    assert len(data.train_indices) + len(data.val_indices) == len(data.train_samples)
    assert torch.bincount(labels[data.val_indices]).tolist() == [2] * len(WNIDS)
    # the test split is ImageNet's val folder, sorted by class: a cap keeps every class
    test_labels = torch.tensor([label for _, label in data.test_samples])
    assert torch.bincount(test_labels[data.test_indices]).tolist() == [1] * len(WNIDS)
    capped = StreamingData.from_config(_config(train_size=8), "cpu", root=imagenet_root, workers=0)
    assert torch.bincount(labels[capped.train_indices]).tolist() == [2] * len(WNIDS)
    assert torch.equal(capped.val_indices, data.val_indices)


def test_batches_depend_on_seed_and_epoch_only_not_on_the_workers(imagenet_root):
    config = _config(seed=1)
    serial = StreamingData.from_config(config, "cpu", root=imagenet_root, workers=0)
    parallel = StreamingData.from_config(config, "cpu", root=imagenet_root, workers=2)
    a = _batches(serial.train_loader("joint", 8), 1)
    b = _batches(parallel.train_loader("joint", 8), 1)
    assert len(a) == len(serial.train_indices) // 8  # drop_last
    assert a[0][0].shape == (8, 3, 224, 224) and a[0][0].dtype == torch.float32
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # a loader made afresh and set to epoch 1 (a resumed run) sees the same batches
    again = _batches(serial.train_loader("joint", 8), 1)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, again, strict=True))
    # another epoch, phase or seed: another order and other crops
    other_epoch = _batches(serial.train_loader("joint", 8), 2)
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in other_epoch]))
    other_seed = StreamingData.from_config(_config(seed=2), "cpu", root=imagenet_root, workers=0)
    assert not torch.equal(a[0][0], _batches(other_seed.train_loader("joint", 8), 1)[0][0])


def test_evaluation_is_in_order_centre_cropped_and_normalised(imagenet_root):
    data = StreamingData.from_config(_config(), "cpu", root=imagenet_root, workers=0)
    spec = dataset_spec("imagenet")
    x, y = next(iter(data.eval_loader("train")))
    labels = torch.tensor([label for _, label in data.train_samples])
    assert torch.equal(y, labels[data.train_indices][:len(y)])
    # a flat image stays flat through resize and crop: every pixel is its colour, normalised
    flat = (torch.tensor(FLAT, dtype=torch.float64) / 255 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    first = x[0].double()
    assert data.train_indices[0] == 0 and torch.allclose(first, flat.view(3, 1, 1).expand_as(first), atol=0.05)
    assert data.eval_loader("val") is data.eval_loader("val")  # kept for the next validation
    with pytest.raises(ValueError, match="valid splits: train, val, test"):
        data.eval_loader("holdout")
    with pytest.raises(ValueError, match="streamed from disk"):
        data.split("test")


def test_missing_imagenet_says_what_to_put_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        StreamingData.from_config(_config(), "cpu", root=tmp_path, workers=0)
    message = str(error.value)
    assert str(tmp_path / "imagenet") in message
    assert all(archive in message for archive in IMAGENET_ARCHIVES) and "train/<wnid>" in message
    assert "missing: meta.bin or ILSVRC2012_devkit_t12.tar.gz; train or" in message
    # the unpacked folders without meta.bin: torchvision would unpack the devkit, which is not there
    write_imagenet(tmp_path / "partial")
    (tmp_path / "partial" / "imagenet" / "meta.bin").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing: meta.bin or ILSVRC2012_devkit_t12.tar.gz\\)"):
        StreamingData.from_config(_config(), "cpu", root=tmp_path / "partial", workers=0)
    # a devkit archive that is not the real one: scipy is missing, or torchvision's MD5 check fails
    (tmp_path / "partial" / "imagenet" / IMAGENET_ARCHIVES[0]).write_bytes(b"not a tar file")
    with pytest.raises(DatasetNotFoundError, match="pip install scipy|corrupted"):
        StreamingData.from_config(_config(), "cpu", root=tmp_path / "partial", workers=0)


def test_imagenet_is_not_loaded_into_memory_and_workers_are_checked(monkeypatch):
    assert set(OPENERS) == {name for name, spec in data_module.DATASETS.items() if spec.streamed}
    with pytest.raises(ValueError, match="streamed from disk.*held in memory: cifar10, cifar100, fashion-mnist"):
        data_module.load_dataset("imagenet")
    with pytest.raises(ValueError, match="held in memory"):
        StreamingData.from_config(make_config("smoke"), "cpu")
    monkeypatch.setenv("MEXLIB_LOADER_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("MEXLIB_LOADER_WORKERS", "many")
    with pytest.raises(ValueError, match="MEXLIB_LOADER_WORKERS"):
        default_workers()


def test_the_store_trains_a_run_on_streamed_images(imagenet_root, tmp_path, monkeypatch):
    """The whole path a paper-profile ImageNet run takes, at toy size: the store opens the
    folders, the trainer draws batches from worker processes, the test logits are stored."""
    monkeypatch.setenv("MEXLIB_DATA", str(imagenet_root))
    monkeypatch.setenv("MEXLIB_LOADER_WORKERS", "1")
    config = _config(regime="mixed", epochs=1, batch_size=8)
    run = RunStore(tmp_path / "runs", device="cpu", progress=False).get_or_run(config)
    logits, labels = run.logits("test")
    assert logits.shape == (len(config.exit_after_blocks) + 1, VAL_PER_CLASS * len(WNIDS), 1000)
    assert torch.equal(labels, torch.arange(len(WNIDS)).repeat_interleave(VAL_PER_CLASS))
    assert torch.isfinite(logits).all()
