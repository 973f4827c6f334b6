"""The work area of a run store (``<store>/work/``): what is in progress, by task key: a lock per
key, the epoch checkpoints of an attempt, and the failed and queued markers a sweep reads.
:class:`mexlib.store.RunStore` owns one (``store.work``)."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

try:  # POSIX: whether another user's lock is held, through a file this process may only read
    import fcntl
except ImportError:  # Windows: filelock's own lock, which opens the file for writing
    fcntl = None

from . import paths


#: The OS's own lock, never filelock's fallback to a lock file's mere existence (which a killed
#: holder would leave behind, so that the next process waited for ever), where filelock can say so.
_NATIVE_ONLY = {"fallback_to_soft": False} if "fallback_to_soft" in inspect.signature(FileLock.__init__).parameters else {}


class WorkArea:
    """``work/`` of a store: what is in progress, by task key. A lock per key (one process trains
    a key at a time), its epoch checkpoints, and markers a sweep leaves: a failed attempt's error
    and a task queued on a cluster. Sweeps read a task's state through this, never the files."""

    def __init__(self, root: Path, fingerprint: str):
        self.root, self.fingerprint = Path(root) / "work", fingerprint

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[Path]:
        """Hold ``work/<key>`` and yield it; a checkpoint left by other code is discarded. The lock
        is ``filelock``'s (``flock`` on Linux and macOS, as every earlier version of this package
        took it; the OS's own file lock on Windows), so it ends with its process, however killed."""
        workdir = self.root / key
        workdir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(workdir.with_name(f"{key}.lock"), **_NATIVE_ONLY):
            stamp = workdir / "code_fingerprint"
            if stamp.is_file() and stamp.read_text() != self.fingerprint:
                shutil.rmtree(workdir)
            workdir.mkdir(exist_ok=True)
            stamp.write_text(self.fingerprint)
            try:
                yield workdir
            finally:
                if workdir.is_dir() and not any(workdir.glob("*.ckpt")):
                    shutil.rmtree(workdir, ignore_errors=True)  # nothing to resume
                # The lock file stays (filelock leaves it on POSIX): deleting it while another
                # process waits on it would let a third process lock a new file and train the same
                # key at the same time.

    def is_locked(self, key: str) -> bool:
        """Whether some process holds ``key``'s lock now (is training it)."""
        path = self.root / f"{key}.lock"
        if not path.is_file():
            return False
        if fcntl is not None:  # read-only: another user's lock file (0644) can be asked too
            handle = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            finally:
                os.close(handle)  # closing releases a lock this check took
            return False
        try:
            with FileLock(path, timeout=0, **_NATIVE_ONLY):
                return False
        except Timeout:
            return True

    def checkpoints(self, key: str) -> list[Path]:
        """The epoch checkpoints an interrupted attempt left, from which the next one resumes."""
        return sorted((self.root / key).glob("*.ckpt"))

    def failure(self, key: str) -> dict | None:
        """The last attempt's error, traceback and log file, if it failed."""
        return self._read(key, "failed")

    def record_failure(self, key: str, record: dict) -> None:
        self._write(key, "failed", record)

    def queued(self, key: str) -> dict | None:
        """The cluster job a sweep queued the task as, if it has not started yet."""
        return self._read(key, "queued")

    def mark_queued(self, key: str, record: dict) -> None:
        self._write(key, "queued", record)

    def starting(self, key: str) -> None:
        """An attempt starts: it is neither failed nor queued any more."""
        for marker in ("failed", "queued"):
            (self.root / f"{key}.{marker}.json").unlink(missing_ok=True)

    def _read(self, key: str, marker: str) -> dict | None:
        """The record, or None when there is none. A record that cannot be read (cut short by a
        full disk or a killed process, or not a JSON object) comes back as ``{"damaged": ...}``,
        naming the file and what is wrong with it, so a status shows it instead of failing."""
        path = self.root / f"{key}.{marker}.json"
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return {"damaged": f"{path} cannot be read ({error})"}
        if not isinstance(record, dict):
            return {"damaged": f"{path} holds a {type(record).__name__}, not a record"}
        return record

    def _write(self, key: str, marker: str, record: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{key}.{marker}.json"
        paths.write_whole(path, json.dumps(record, indent=1))


__all__ = ["WorkArea"]
