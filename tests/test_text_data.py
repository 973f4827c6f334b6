"""The language chapter's data: WordNet glosses labelled by supersense."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from mexlib.data import DatasetCorruptError, DatasetNotFoundError
from mexlib.text_data import DATA_FILES, LEXNAMES, find_wordnet, load_wordnet_supersenses, read_glosses

LICENSE = "  1 This software and database is being provided to you, the LICENSEE, by\n"


def _write_wordnet(folder: Path, per_class: int = 20) -> dict[str, list[tuple[int, str]]]:
    """A WordNet folder of the real format: license lines, then synset lines of every part of
    speech, ``per_class`` glosses for a few lexicographer files each."""
    files = {"data.noun": [5, 6, 18], "data.verb": [29, 38], "data.adj": [0, 44], "data.adv": [2]}
    written = {}
    for name, classes in files.items():
        lines, rows, offset = [LICENSE, LICENSE], [], 1740
        for number in classes:
            for k in range(per_class):
                gloss = f"gloss {k} of {LEXNAMES[number]}; \"an example\""
                lines.append(f"{offset:08d} {number:02d} {name[5]} 01 word{k} 0 000 | {gloss}  \n")
                rows.append((number, gloss))
                offset += 100
        (folder / name).write_text("".join(lines))
        written[name] = rows
    return written


def test_glosses_and_supersenses_are_read_as_written(tmp_path):
    written = _write_wordnet(tmp_path)
    texts, labels = read_glosses(tmp_path)
    expected = [row for name in DATA_FILES for row in written[name]]
    assert list(zip(labels, texts)) == expected


def test_the_split_is_stratified_fixed_by_its_seed_and_covers_every_gloss_once(tmp_path):
    _write_wordnet(tmp_path, per_class=40)
    data = load_wordnet_supersenses(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=3)
    together = torch.cat(list(data.splits.values()))
    assert sorted(together.tolist()) == list(range(len(data.texts)))
    for name, share in (("test", 0.2), ("val", 0.1)):
        counts = collections.Counter(data.labels[data.splits[name]].tolist())
        assert set(counts.values()) == {round(40 * share)}, (name, counts)
    again = load_wordnet_supersenses(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert all(torch.equal(again.splits[k], data.splits[k]) for k in data.splits)
    other = load_wordnet_supersenses(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert not torch.equal(other.splits["test"], data.splits["test"])
    texts, labels = data.split("val")
    assert [data.texts[i] for i in data.splits["val"].tolist()] == texts
    assert data.classes == LEXNAMES and len(LEXNAMES) == 45
    with pytest.raises(ValueError, match="valid splits: train, val, test"):
        data.split("dev")
    with pytest.raises(ValueError, match="sum below 1"):
        load_wordnet_supersenses(tmp_path, val_fraction=0.5, test_fraction=0.5)


def test_missing_or_damaged_wordnet_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install wordnet-base") as error:
        find_wordnet(tmp_path)
    assert str(tmp_path) in str(error.value)
    _write_wordnet(tmp_path)
    with open(tmp_path / "data.verb", "a") as file:
        file.write("00099999 7x v 01 broken\n")
    with pytest.raises(DatasetCorruptError, match=r"data.verb, line \d+, is not a WordNet synset line"):
        load_wordnet_supersenses(tmp_path)


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="needs Debian's wordnet-base "
                    "(apt-get install wordnet-base; .ci/run installs it)")
def test_debians_wordnet_has_every_synset_and_the_45_supersenses():
    data = load_wordnet_supersenses()
    # WordNet 3.0: 82,115 noun, 13,767 verb, 18,156 adjective and 3,621 adverb synsets.
    assert len(data.texts) == 82_115 + 13_767 + 18_156 + 3_621
    counts = collections.Counter(data.classes[label].split(".")[0] for label in set(data.labels.tolist()))
    assert counts == {"noun": 26, "verb": 15, "adj": 3, "adv": 1}
    assert all(text and "|" not in text for text in data.texts)


# --- 20 Newsgroups through scikit-learn's own fetcher -----------------------------------------

def _newsgroups_archive(folder: Path) -> tuple[Path, dict]:
    """A 20news-bydate.tar.gz of the real layout (``20news-bydate-{train,test}/<group>/<post>``),
    three groups, posts with headers, a quoted reply and a signature."""
    import tarfile

    groups = {"comp.graphics": "pixels", "rec.autos": "engines", "sci.space": "orbits"}
    staging = folder / "staging"
    for part, count in (("20news-bydate-train", 10), ("20news-bydate-test", 4)):
        for group, word in groups.items():
            (staging / part / group).mkdir(parents=True)
            for k in range(count):
                body = f"From: someone@{group}\nSubject: post {k}\n\n> an earlier {group} reply\n{word} {k} here\n-- \nsig\n"
                (staging / part / group / str(1000 + k)).write_text(body, encoding="latin1")
    archive = folder / "20news-bydate.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for part in ("20news-bydate-train", "20news-bydate-test"):
            tar.add(staging / part, arcname=part)
    return archive, groups


def test_20_newsgroups_downloads_through_scikit_learn_and_splits_by_date_and_class(tmp_path, monkeypatch):
    """The archive is served over HTTP from this machine: scikit-learn's real fetcher downloads,
    verifies, unpacks and caches it; headers, quotes and signatures are removed."""
    import functools
    import hashlib
    import http.server
    import threading

    from sklearn.datasets import _base, _twenty_newsgroups

    from mexlib.text_data import load_20newsgroups

    served = tmp_path / "served"
    served.mkdir()
    archive, groups = _newsgroups_archive(served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        checksum = hashlib.sha256(archive.read_bytes()).hexdigest()
        monkeypatch.setattr(_twenty_newsgroups, "ARCHIVE", _base.RemoteFileMetadata(
            filename=archive.name, url=f"http://127.0.0.1:{server.server_port}/{archive.name}", checksum=checksum))
        home = tmp_path / "data"
        data = load_20newsgroups(home, val_fraction=0.2, seed=0)
    finally:
        server.shutdown()
    assert data.classes == tuple(groups)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 24, "val": 6, "test": 12}
    assert collections.Counter(data.labels[data.splits["val"]].tolist()) == {0: 2, 1: 2, 2: 2}
    texts, labels = data.split("test")
    assert all(groups[data.classes[label]] in text for text, label in zip(texts, labels.tolist()))
    assert not any("From:" in t or "reply" in t or "sig" in t for t in data.texts)
    # cached: read again without the server
    again = load_20newsgroups(home, val_fraction=0.2, seed=0)
    assert again.texts == data.texts and torch.equal(again.splits["val"], data.splits["val"])


def test_20_newsgroups_unreachable_says_how_to_get_it(tmp_path, monkeypatch):
    from sklearn.datasets import _base, _twenty_newsgroups

    from mexlib.text_data import load_20newsgroups

    monkeypatch.setattr(_twenty_newsgroups, "ARCHIVE", _base.RemoteFileMetadata(
        filename="20news-bydate.tar.gz", url="http://127.0.0.1:9/20news-bydate.tar.gz", checksum="0" * 64))
    with pytest.raises(DatasetNotFoundError, match="could not be downloaded.*fetch_20newsgroups"), \
            pytest.warns(UserWarning, match="Retry downloading"):  # scikit-learn tries again before it gives up
        load_20newsgroups(tmp_path, val_fraction=0.1)


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="needs Debian's wordnet-base")
def test_texts_reach_the_trainer_as_token_ids_in_stratified_subsets():
    from mexlib.config import make_config
    from mexlib.device_data import DataCache

    config = make_config("smoke", dataset="wordnet-supersenses", train_size=450, val_size=90, test_size=135)
    data = DataCache(torch.device("cpu")).get(config)
    assert data.train_images.shape == (450, 32) and data.train_images.dtype == torch.long
    for labels, size in ((data.train_labels, 450), (data.val_labels, 90), (data.test_labels, 135)):
        assert len(labels) == size and len(set(labels.tolist())) >= 30  # every large class is drawn from
    ids, labels = next(iter(data.train_loader("joint", 16)))
    assert ids.dtype == torch.long and ids.shape == (16, 32) and (ids[:, 0] == 101).all()  # [CLS] first
    again = DataCache(torch.device("cpu")).get(config)
    assert torch.equal(again.test_images, data.test_images)
