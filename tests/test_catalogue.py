"""mexlib store: ls (every entry as a row), show (one run), gc (what can go), read from a real store."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mexlib import catalogue
from mexlib.config import make_config
from mexlib.store import RunStore, run_key


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    store = RunStore(root / "runs", device="cpu", progress=False)
    joint = make_config("smoke", regime="joint", epochs=1, train_size=300)
    disjoint = make_config("smoke", regime="disjoint", epochs=1, train_size=300)
    store.get_or_run(joint)
    store.get_or_run(disjoint)
    return store, joint, disjoint


def test_ls_lists_each_run_with_what_it_is_how_good_and_by_what_code(store, capsys, monkeypatch):
    store, joint, disjoint = store
    table = catalogue.entries(store.root).set_index("entry")
    assert list(table.columns) == catalogue.COLUMNS[1:]
    row = table.loc[f"run-{run_key(store.resolve(joint))}"]
    logits, labels = store.find(joint).logits("test")
    assert row["final_acc"] == round(100 * (logits[-1].argmax(-1) == labels).double().mean().item(), 2)
    assert (row["kind"], row["regime"], row["arch"], row["seed"], row["status"]) == ("run", "joint", "resnet-smoke", 0,
                                                                                    "sound")
    assert row["code"] == store.fingerprint and not row["stale"]
    assert set(table["kind"]) == {"run", "backbone"} and len(table) == 3
    monkeypatch.setenv("MEXLIB_RUNS", str(store.root))
    assert catalogue.main(["ls", "--where", "regime=disjoint"]) == 0
    out = capsys.readouterr().out
    assert f"run-{run_key(store.resolve(disjoint))}" in out and f"run-{run_key(store.resolve(joint))}" not in out
    with pytest.raises(SystemExit) as stop:
        catalogue.main(["ls", "--where", "colour=red"])
    assert stop.value.code == 2 and "a column of: entry, kind" in capsys.readouterr().err


def test_a_damaged_entry_is_listed_as_damaged_and_not_read(store, tmp_path):
    store, joint, _ = store
    root = tmp_path / "runs"
    shutil.copytree(store.root, root, ignore=shutil.ignore_patterns("work"))
    name = f"run-{run_key(store.resolve(joint))}"
    (root / name / "logits.pt").write_bytes(b"not the logits")
    table = catalogue.entries(root).set_index("entry")
    assert table.loc[name, "status"] == "damaged: logits.pt does not match its checksum"
    assert table.loc[name, "final_acc"] == ""


def test_show_gives_one_run_in_full_by_a_start_of_its_key(store, monkeypatch, capsys):
    store, joint, _ = store
    key = run_key(store.resolve(joint))
    text = catalogue.show(store.root, key[:6])
    assert f"run-{key}" in text and "sound" in text and '"regime": "joint"' in text
    accuracies = (store.find(joint).logits("test")[0].argmax(-1) == store.find(joint).logits("test")[1])
    assert ", ".join(f"{a:.2f}" for a in accuracies.double().mean(1).mul(100).tolist()) in text
    monkeypatch.setenv("MEXLIB_RUNS", str(store.root))
    with pytest.raises(SystemExit) as stop:
        catalogue.main(["show", "zzzz"])
    assert stop.value.code == 2 and "no entries" in capsys.readouterr().err


def test_gc_lists_what_can_go_and_removes_it_only_when_asked(store, tmp_path, monkeypatch, capsys):
    store, joint, _ = store
    root = tmp_path / "runs"
    shutil.copytree(store.root, root, ignore=shutil.ignore_patterns("work"))
    name = f"run-{run_key(store.resolve(joint))}"
    copy = RunStore(root, device="cpu", progress=False)
    copy.keep(f"records-{run_key(store.resolve(joint))}-gradients", {"records.pt": torch.ones(2)}, of_code=True)
    copy.keep("records-0123456789abcdef-gradients", {"records.pt": torch.ones(2)}, of_code=True)  # no such run
    (root / "damaged" / f"{name}-0badc0de").mkdir(parents=True)
    (root / "damaged" / f"{name}-0badc0de" / "logits.pt").write_bytes(b"x" * 100)
    (root / "replacements").mkdir()
    shutil.copytree(root / name, root / "replacements" / name)  # its entry is sound: read no more
    leftover = root / f".tmp-{name}-0badc0de"
    leftover.mkdir()
    (leftover / ".writer.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0}))
    import os
    os.utime(leftover, (0, 0))  # written long ago on another host
    found = {row["path"].name: row["what"] for row in catalogue.garbage(root)}
    assert set(found) == {f"{name}-0badc0de", name, "records-0123456789abcdef-gradients", leftover.name}
    assert "moved aside as damaged" in found[f"{name}-0badc0de"] and "sound again" in found[name]
    monkeypatch.setenv("MEXLIB_RUNS", str(root))
    assert catalogue.main(["gc"]) == 0
    assert "a dry run: would remove 4 entries" in capsys.readouterr().out and leftover.exists()
    assert catalogue.main(["gc", "--yes"]) == 0
    assert "removed 4 entries" in capsys.readouterr().out
    assert catalogue.garbage(root) == [] and (root / name).is_dir()
    assert (root / f"records-{run_key(store.resolve(joint))}-gradients").is_dir()  # its run is stored: kept
