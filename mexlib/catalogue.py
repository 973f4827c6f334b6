"""What a run store holds, readable: ``mexlib store ls`` (a table of every entry), ``mexlib store
show KEY`` (one run in full) and ``mexlib store gc`` (what can go: entries moved aside as damaged,
replacements whose entry is sound again, recordings of runs no longer stored, leftovers of killed
writes; a dry run unless ``--yes``).

A run's row says what it is (kind, architecture, data, regime, method, seed, profile), how good
(the final exit's test accuracy), what it cost (wall time) and by what code (its fingerprint, and
whether that is the code installed now: ``stale``); an entry that fails its check is listed as
``damaged`` or ``unreadable``, never read further.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd

from . import paths
from .checkpoints import load_tensors
from .provenance import code_fingerprint
from .store import REPLACEMENTS, RUN_FILES, UnreadableEntryError, leftovers, verify

#: The columns of :func:`entries`.
COLUMNS = ["entry", "kind", "arch", "dataset", "regime", "method", "seed", "profile", "final_acc", "wall_min",
           "finished", "code", "stale", "status"]


def entries(root: str | Path | None = None, accuracy: bool = True) -> pd.DataFrame:
    """Every entry of the store at ``root`` (default: :func:`mexlib.paths.runs_dir`), a row each
    (:data:`COLUMNS`); ``accuracy`` reads each run's test logits for its final exit's accuracy."""
    root = Path(root) if root is not None else paths.runs_dir()
    current = code_fingerprint()
    rows = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in ("work", "damaged", REPLACEMENTS)) if root.is_dir() else []
    folders += sorted((root / REPLACEMENTS).iterdir()) if (root / REPLACEMENTS).is_dir() else []
    for folder in folders:
        rows.append(_row(root, folder, current, accuracy))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(root: Path, folder: Path, current: str, accuracy: bool) -> dict:
    kind = folder.name.split("-", 1)[0]
    row = dict.fromkeys(COLUMNS, "")
    row.update(entry=folder.relative_to(root).as_posix(), kind=kind)
    required = RUN_FILES if kind in ("run", "backbone") else ()
    try:
        problem = verify(folder, required)
    except UnreadableEntryError as error:
        return {**row, "status": f"unreadable: {error.strerror}"}
    if problem is not None:
        return {**row, "status": f"damaged: {problem}"}
    row["status"] = "sound"
    if kind not in ("run", "backbone"):
        stamp = folder / "code.json"
        if stamp.is_file():
            row["code"] = json.loads(stamp.read_text()).get("code_fingerprint", "")
            row["stale"] = row["code"] != current
        return row
    config = json.loads((folder / "config.json").read_text())
    record = json.loads((folder / "provenance.json").read_text())
    row.update({name: config.get(name, "") for name in ("arch", "dataset", "regime", "method", "seed", "profile")})
    if kind == "backbone":
        row["regime"] = "phase 1"
    row.update(wall_min=round(record.get("wall_time_seconds", 0.0) / 60, 1), finished=record.get("finished", ""),
               code=record.get("code_fingerprint", ""))
    row["stale"] = row["code"] != current
    if accuracy:
        logits = load_tensors(folder / "logits.pt", name=folder / "logits.pt")
        values, labels = logits["test_logits"], logits["test_labels"]
        row["final_acc"] = round(100 * (values[-1].argmax(-1) == labels).double().mean().item(), 2)
    return row


def show(root: str | Path | None, key: str) -> str:
    """One stored run in full, as text: configuration, provenance, each phase's epochs and best
    epoch, each exit's test accuracy. ``key``: the entry's name, its key, or a unique start of it."""
    root = Path(root) if root is not None else paths.runs_dir()
    folder = find_entry(root, key)
    problem = verify(folder, RUN_FILES if folder.name.split("-", 1)[0] in ("run", "backbone") else ())
    lines = [f"{folder}", f"check: {problem or 'sound (every file matches its manifest)'}"]
    if problem is not None:
        return "\n".join(lines)
    for name in ("config.json", "provenance.json"):
        if (folder / name).is_file():
            lines += [f"\n{name}:", json.dumps(json.loads((folder / name).read_text()), indent=1)]
    if (folder / "history.json").is_file():
        lines.append("\nphases:")
        for phase in json.loads((folder / "history.json").read_text()):
            epochs = len(phase.get("history", []))
            lines.append(f"  {phase['phase']}: " + (f"from {phase['stored_run']}" if "stored_run" in phase else
                                                     f"{epochs} epochs, best epoch {phase.get('best_epoch')}, "
                                                     f"stopped early: {phase.get('stopped_early')}"))
    if (folder / "logits.pt").is_file():
        logits = load_tensors(folder / "logits.pt", name=folder / "logits.pt")
        values, labels = logits["test_logits"], logits["test_labels"]
        accuracies = (values.argmax(-1) == labels).double().mean(1).mul(100).tolist()
        lines.append("\ntest accuracy by exit (%): " + ", ".join(f"{a:.2f}" for a in accuracies))
    return "\n".join(lines)


def find_entry(root: Path, key: str) -> Path:
    """The entry folder ``key`` names (its full name, its key, or a unique start of the key)."""
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    exact = [p for p in folders if p.name == key]
    if exact:
        return exact[0]
    matches = [p for p in folders if "-" in p.name and p.name.split("-", 1)[1].startswith(key)]
    if len(matches) != 1:
        some = ", ".join(sorted(p.name for p in folders if p.name not in ("work", "damaged"))[:8])
        raise ValueError(f"{'no' if not matches else len(matches)} entries of {root} match {key!r}"
                         + (f": {', '.join(sorted(p.name for p in matches))}" if matches else
                            f"; entries: {some or 'none'}"))
    return matches[0]


def garbage(root: str | Path | None = None) -> list[dict]:
    """What can go from the store: entries moved aside as damaged, replacements whose entry is
    sound again (read no more), recordings of runs the store no longer holds, and leftovers of
    killed writes whose writer is gone (:func:`mexlib.store.leftovers`). Each as ``path``,
    ``what`` and ``bytes``."""
    root = Path(root) if root is not None else paths.runs_dir()
    found = []
    for folder in sorted((root / "damaged").iterdir()) if (root / "damaged").is_dir() else []:
        found.append(dict(path=folder, what="moved aside as damaged"))
    for folder in sorted((root / REPLACEMENTS).iterdir()) if (root / REPLACEMENTS).is_dir() else []:
        own = root / folder.name
        try:
            superseded = own.is_dir() and verify(own, ()) is None
        except UnreadableEntryError:
            superseded = False
        if superseded:
            found.append(dict(path=folder, what=f"a replacement of {own.name}, which is sound again"))
    for folder in sorted(root.glob("records-*")) if root.is_dir() else []:
        run = folder.name.split("-")[1]
        owner = root / f"backbone-{folder.name.split('-')[2]}" if run == "backbone" else root / f"run-{run}"
        if not owner.is_dir():
            found.append(dict(path=folder, what=f"a recording of {owner.name}, which is not stored"))
    found += [dict(path=row["path"], what=f"left by a killed write ({row['why']})")
              for row in leftovers(root) if row["gone"]]
    for row in found:
        row["bytes"] = sum(f.stat().st_size for f in row["path"].rglob("*") if f.is_file()) \
            if row["path"].is_dir() else row["path"].stat().st_size
    return found


def collect(root: str | Path | None = None, remove: bool = False) -> list[dict]:
    """:func:`garbage`, each row with ``removed``: with ``remove``, each is deleted."""
    root = Path(root) if root is not None else paths.runs_dir()
    rows = garbage(root)
    for row in rows:
        row["removed"] = False
        if remove:
            if row["path"].is_dir():
                shutil.rmtree(row["path"])
            else:
                row["path"].unlink(missing_ok=True)
            row["removed"] = True
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mexlib store", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("ls", help="a table of every entry")
    listing.add_argument("--where", action="append", default=[],
                         help=f"column=value (repeatable); columns: {', '.join(COLUMNS)}")
    listing.add_argument("--no-accuracy", action="store_true", help="skip reading each run's logits")
    one = commands.add_parser("show", help="one run in full")
    one.add_argument("key", help="the entry's name, its key, or a unique start of the key")
    sweep = commands.add_parser("gc", help="what can go from the store (a dry run unless --yes)")
    sweep.add_argument("--yes", action="store_true", help="remove what it lists")
    args = parser.parse_args(argv)
    root = paths.runs_dir()
    if args.command == "ls":
        filters = {}
        for item in args.where:
            name, sep, value = item.partition("=")
            if not sep or name not in COLUMNS:
                parser.error(f"--where takes column=value with a column of: {', '.join(COLUMNS)}; got {item!r}")
            filters[name] = value
        table = entries(root, accuracy=not args.no_accuracy)
        for name, value in filters.items():
            table = table[table[name].astype(str) == value]
        print(table.to_markdown(index=False) if len(table) else f"{root}: no entries" +
              (" match" if filters else ""))
        return 0
    if args.command == "show":
        try:
            print(show(root, args.key))
        except ValueError as error:
            parser.error(str(error))
        return 0
    rows = collect(root, remove=args.yes)
    if not rows:
        print(f"{root}: nothing to collect")
        return 0
    print(pd.DataFrame([{"path": str(r["path"].relative_to(root)), "MB": round(r["bytes"] / 1e6, 2),
                         "what": r["what"], "removed": r["removed"]} for r in rows]).to_markdown(index=False))
    print(f"{'removed' if args.yes else 'a dry run: would remove'} {len(rows)} entries, "
          f"{sum(r['bytes'] for r in rows) / 1e6:.1f} MB" + ("" if args.yes else "; --yes removes them"))
    return 0


__all__ = ["COLUMNS", "collect", "entries", "find_entry", "garbage", "main", "show"]
