"""The files of one store entry: how an entry folder is written whole (a temporary folder, a
manifest of checksums, one rename), checked (:func:`verify`), moved aside when damaged, replaced
where it cannot be moved, and what killed writers leave behind (:func:`leftovers`,
:func:`clean`); and how results are kept as tensors and plain values only (:func:`plain`).
:mod:`mexlib.store` builds its entries (runs, recordings, cached results) on these.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .work_area import WorkArea

#: How a temporary entry folder's name starts; the file in it that names its writer (process, host).
TMP_PREFIX, WRITER_FILE = ".tmp-", ".writer.json"
#: After how long a leftover whose writer cannot be asked (another host, no record) counts as gone.
LEFTOVER_AGE_S = 24 * 3600
#: Where a fresh entry is kept while a damaged one that may not be moved aside holds its name.
REPLACEMENTS = "replacements"


class DamagedRunWarning(UserWarning):
    """A stored entry failed its integrity check and will be computed again."""


class StoreWriteError(OSError):
    """The store could not write an entry (a full disk, a read-only store, a permission): the
    message names the entry and the cause; what the store held before is untouched and no
    temporary folder is left behind."""


class UnreadableEntryError(PermissionError):
    """A stored entry (or the store's folder) this process may not read: named with the cause;
    it is neither served nor moved aside nor computed again over another user's entry."""


def verify(path: Path, required=()) -> str | None:
    """None when the entry folder matches its manifest (and has the ``required`` files), else
    what is wrong. An entry this process may not read raises :class:`UnreadableEntryError`."""
    try:
        return _problem(path, required)
    except PermissionError as error:
        raise _unreadable(path, error) from error


def _verified(path: Path, required, deep: bool = False) -> str | None:
    return verify(path, required)


def write_entry(final: Path, writers: dict[str, Callable[[Path], None]], check=None) -> Path:
    """Write each file with its writer into a temporary folder beside ``final``, add
    ``manifest.json`` and rename the folder to ``final``; return where the entry now is. If
    another process finished a sound ``final`` first, keep theirs. If ``final`` is damaged and
    this process may not move it aside (another user's entry in a shared store), the fresh entry
    is kept in ``replacements/`` beside it (read instead of it until it is removed), or, where
    even that is refused, in a temporary folder outside the store; a warning says where and what
    to do. A write that fails (:class:`StoreWriteError` for a full disk, a read-only store, ...)
    removes its temporary folder and leaves every stored entry as it was. ``check(path, required,
    deep)``: what is wrong with an entry (default: :func:`verify`; the store's adds its keys)."""
    tmp = final.parent / f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        (tmp / WRITER_FILE).write_text(json.dumps(_writer()))  # who writes: for leftovers() after a kill
        for file, write in writers.items():
            write(tmp / file)
        (tmp / "manifest.json").write_text(json.dumps({f: _describe(tmp / f) for f in writers}, indent=1))
        (tmp / WRITER_FILE).unlink()
        try:
            tmp.rename(final)
            return final
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
                raise
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, StoreWriteError):
            cause = error.strerror or str(error)
            raise StoreWriteError(error.errno, f"could not store {final}: {cause} "
                                               f"(nothing stored before was changed)") from error
        raise
    try:  # the name is taken: by another process's sound entry, or by a damaged one
        return _beside(final, tmp, list(writers), check or _verified)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _writer() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}


def _alive(writer: dict) -> bool | None:
    """Whether the process a writer record names still runs: None where this process cannot
    tell (another host, or a system without signal 0)."""
    if writer.get("host") != socket.gethostname() or os.name == "nt" or not isinstance(writer.get("pid"), int):
        return None
    try:
        os.kill(writer["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def leftovers(root: Path, now: float | None = None) -> list[dict]:
    """What interrupted writes left in the store at ``root``: temporary entry folders
    (``.tmp-<entry>-<id>/``) and temporary files of whole-file writes (``.<file>.<id>.part``, a
    checkpoint's or a marker's). Each as ``path``, ``bytes``, ``age_s``, ``gone`` (whether its
    writer has ended, so it can be removed) and ``why``. A writer is known gone when it ran on this
    host and its process has ended (it records itself in the folder); a file of another host's,
    or one without a record, counts as gone after :data:`LEFTOVER_AGE_S`; a checkpoint's
    temporary file, as soon as no process holds its run's lock."""
    root, now = Path(root), time.time() if now is None else now
    work = WorkArea(root, "")
    found = []
    candidates = [*root.glob(f"{TMP_PREFIX}*"), *root.glob("work/.*.part"), *root.glob("work/*/.*.part")]
    for path in sorted(candidates):
        try:
            age = now - path.stat().st_mtime
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
            writer = json.loads((path / WRITER_FILE).read_text()) if (path / WRITER_FILE).is_file() else None
        except (OSError, ValueError) as error:
            found.append(dict(path=path, bytes=0, age_s=0.0, gone=False, why=f"cannot be read ({error})"))
            continue
        alive = _alive(writer) if isinstance(writer, dict) else None
        if path.parent.parent == root / "work":  # a checkpoint of work/<key>/: its run's lock tells
            try:
                alive = work.is_locked(path.parent.name)
            except OSError as error:
                found.append(dict(path=path, bytes=size, age_s=age, gone=False,
                                  why=f"its run's lock cannot be read ({error.strerror or error})"))
                continue
            why = "its run is training" if alive else "no process holds its run's lock"
        elif alive is not None:
            why = f"its writer (process {writer['pid']} on this host) " + ("still runs" if alive else "has ended")
        else:
            alive = age < LEFTOVER_AGE_S
            who = f"written on {writer.get('host')}" if isinstance(writer, dict) else "no record of its writer"
            why = f"{who}, {age / 3600:.1f} h old (gone after {LEFTOVER_AGE_S / 3600:.0f} h)"
        found.append(dict(path=path, bytes=size, age_s=age, gone=not alive, why=why))
    return found


def clean(root: Path, remove: bool = False) -> list[dict]:
    """:func:`leftovers` of the store at ``root``; with ``remove``, those whose writer is gone are
    deleted (each row's ``removed`` says so). Never touches a finished entry."""
    rows = leftovers(root)
    for row in rows:
        row["removed"] = False
        if remove and row["gone"]:
            try:
                if row["path"].is_dir():
                    shutil.rmtree(row["path"])
                else:
                    row["path"].unlink(missing_ok=True)
                row["removed"] = True
            except OSError as error:  # another user's: not ours to remove
                row["why"] += f"; not removed ({error.strerror or error})"
    return rows


def _beside(final: Path, fresh: Path, required: list[str], check) -> Path:
    """``fresh`` (a complete entry in its temporary folder) could not be renamed to ``final``,
    which exists: keep ``final`` when it is sound (another process finished it first); else
    replace it, or keep ``fresh`` beside it."""
    problem = check(final, required, True)
    if problem is None:
        shutil.rmtree(fresh, ignore_errors=True)
        return final
    root = final.parent
    try:
        _move_aside(final, root)
        fresh.rename(final)
        return final
    except FileNotFoundError:  # moved aside by another process: take the place it left
        fresh.rename(final)
        return final
    except OSError as error:
        cause = f"{error.strerror or error}{_owner(final)}"
    replacement = root / REPLACEMENTS / final.name
    if replacement.exists() and check(replacement, required, True) is None:  # another reader's
        shutil.rmtree(fresh, ignore_errors=True)
        return replacement
    try:
        replacement.parent.mkdir(exist_ok=True)
        if replacement.exists():
            _move_aside(replacement, root)
        fresh.rename(replacement)
        where = f"kept the fresh result at {replacement}, which the store reads instead until {final} is removed"
    except OSError as error:
        outside = Path(tempfile.mkdtemp(prefix="mexlib-unkept-")) / final.name
        shutil.move(fresh, outside)
        replacement = outside
        where = (f"could not keep the fresh result in the store either ({error.strerror or error}), so it is "
                 f"kept at {outside} for now and the next process will compute it again")
    warnings.warn(f"stored entry {final} is damaged ({problem}) and could not be replaced ({cause}); {where}. "
                  f"Ask the entry's owner to delete it (or move it into {root / 'damaged'}), or delete it "
                  f"yourself where you may.", DamagedRunWarning, stacklevel=4)
    return replacement


def _move_aside(path: Path, root: Path) -> Path:
    """Move the entry ``path`` into ``root/damaged/`` under a name of its own; where it went."""
    damaged = root / "damaged" / f"{path.name}-{uuid.uuid4().hex[:8]}"
    damaged.parent.mkdir(parents=True, exist_ok=True)
    path.rename(damaged)
    return damaged


def _owner(path: Path) -> str:
    """``path``'s owner as words for a message (``, owned by alice``), or nothing if unknown."""
    try:
        return f", owned by {path.owner()}"
    except (OSError, KeyError, NotImplementedError):
        try:
            return f", owned by user id {path.stat().st_uid}"
        except OSError:
            return ""


def _problem(path: Path, required) -> str | None:
    manifest = path / "manifest.json"
    if not _is_file(manifest):
        return "no manifest.json"
    try:
        expected = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"unreadable manifest.json ({error})"
    if not isinstance(expected, dict):
        return f"manifest.json holds a {type(expected).__name__}, not a list of files"
    for name in dict.fromkeys([*required, *expected]):
        file = path / name
        if not _is_file(file):
            return f"{name} is missing"
        if expected.get(name) != _describe(file):
            return f"{name} does not match its checksum"
    return None


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; a folder this process may not search raises PermissionError
    (``Path.is_file`` hides it on newer Pythons, which would make an unreadable entry look damaged)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _writable(folder: Path) -> bool:
    """Whether this process may add entries to ``folder`` (or create it: its nearest existing
    parent is checked); a read-only file system counts as not writable."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError as error:
        raise _unreadable(path, error) from error


def _unreadable(path: Path, error: OSError) -> UnreadableEntryError:
    where = error.filename or path
    return UnreadableEntryError(error.errno, f"stored entry {path} cannot be read ({where}: "
                                             f"{error.strerror or error}{_owner(Path(where))}): ask its owner to "
                                             f"make it readable, or use a store of your own (MEXLIB_RUNS)")


def _describe(file: Path) -> dict:
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return {"bytes": file.stat().st_size, "sha256": digest}


def _plain(obj):
    """``obj`` as tensors and plain values only, so that reading it back runs no code (torch.load's
    ``weights_only``): a DataFrame becomes its columns, each a tensor (numbers, bit for bit) or a
    list (text), with its index the same way."""
    if isinstance(obj, pd.DataFrame):
        return {_FRAME: True, "columns": [_column(obj[c]) for c in obj.columns], "names": list(obj.columns),
                "index": [_column(obj.index.get_level_values(i)) for i in range(obj.index.nlevels)],
                "index_names": list(obj.index.names), "range_index": isinstance(obj.index, pd.RangeIndex)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _column(values) -> Tensor | list:
    array = np.asarray(values)
    return torch.from_numpy(array.copy()) if array.dtype.kind in "biuf" else array.tolist()


def _unplain(obj):
    if isinstance(obj, dict) and obj.get(_FRAME):
        def values(column):
            return column.numpy() if isinstance(column, Tensor) else column
        frame = pd.DataFrame({n: values(c) for n, c in zip(obj["names"], obj["columns"])}, columns=obj["names"])
        if not obj["range_index"]:
            levels = [values(c) for c in obj["index"]]
            frame.index = (pd.Index(levels[0], name=obj["index_names"][0]) if len(levels) == 1
                           else pd.MultiIndex.from_arrays(levels, names=obj["index_names"]))
        return frame
    if isinstance(obj, dict):
        return {k: _unplain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unplain(v) for v in obj)
    return obj


_FRAME = "__mexlib_dataframe__"


__all__ = ["DamagedRunWarning", "LEFTOVER_AGE_S", "REPLACEMENTS", "StoreWriteError", "TMP_PREFIX", "UnreadableEntryError",
           "WRITER_FILE", "clean", "leftovers", "verify", "write_entry"]
