"""Files of tensors the package writes and reads back: resumable checkpoints, with a checksum and
the random generators' state, and one loader that never runs code from a file.

A checkpoint is one file, written whole or not at all (:func:`mexlib.paths.write_whole`): a first
line that names the format, a second with the payload's size and SHA-256, then the payload
(``torch.save`` of tensors and plain values). :func:`read_checkpoint` checks the size and the
checksum before it loads anything, so a flipped bit inside a tensor is found, not trained on.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from . import paths

#: The first line of every checkpoint file.
MAGIC = b"mexlib-checkpoint v1\n"


class DamagedCheckpointError(ValueError):
    """A checkpoint that is cut short, fails its checksum or is not a checkpoint of this package."""


class DamagedCheckpointWarning(UserWarning):
    """A checkpoint could not be resumed from (damaged, cut short, foreign): its phase starts again."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a read-only folder): the message names the
    phase, the epoch and the file; the previous checkpoint is kept."""


class ForeignFileError(ValueError):
    """A file that holds more than tensors and plain values (a pickle of Python objects): it is
    not a result of this package and is not loaded, since loading it could run code it names."""


def save_tensors(obj, path: Path) -> None:
    """``torch.save`` through memory, then one plain write: a full disk or a read-only store then
    raises the OSError that says so (``torch.save`` to a file reports it as an iostream error)."""
    path.write_bytes(_serialise(obj))


def load_tensors(source: Path | io.BytesIO, map_location=None, name: Path | str | None = None):
    """What :func:`save_tensors` wrote: tensors and plain values only (``weights_only``). A file
    that holds other Python objects raises :class:`ForeignFileError`, naming it (torch's own
    message would suggest loading it with the weights-only check turned off, which runs its code)."""
    try:
        return torch.load(source, weights_only=True, map_location=map_location)
    except pickle.UnpicklingError as error:
        raise ForeignFileError(f"{name or source} holds Python objects, not only tensors and plain values: it is "
                               f"not a result of this package and was not loaded (loading it could run code "
                               f"it names); delete it, or move it aside, and compute it again") from error


def write_checkpoint(obj, path: Path) -> None:
    """``obj`` (tensors and plain values) as a checkpoint file with its checksum, whole or not at
    all: a full disk raises its OSError and leaves the previous checkpoint (and no temporary
    file) behind."""
    payload = _serialise(obj)
    header = json.dumps({"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()})
    paths.write_whole(path, MAGIC + header.encode() + b"\n" + payload)


def read_checkpoint(path: Path, map_location=None):
    """The checkpoint at ``path`` once its size and checksum match; :class:`DamagedCheckpointError`
    says what is wrong otherwise (:class:`ForeignFileError` for a pickle of objects)."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise DamagedCheckpointError(f"{path} does not start as a checkpoint of this package does")
    header, _, payload = data[len(MAGIC):].partition(b"\n")
    try:
        expected = json.loads(header)
        size, digest = int(expected["bytes"]), str(expected["sha256"])
    except (ValueError, KeyError, TypeError) as error:
        raise DamagedCheckpointError(f"{path} has an unreadable header ({error})") from error
    if len(payload) != size:
        raise DamagedCheckpointError(f"{path} holds {len(payload)} bytes of {size}: it was cut short")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise DamagedCheckpointError(f"{path} does not match its checksum")
    return load_tensors(io.BytesIO(payload), map_location, name=path)


def checkpoint_epoch(path: Path) -> int:
    """The last epoch a checkpoint holds (for a look at a run in progress)."""
    return int(read_checkpoint(path)["epoch"])


def random_state() -> dict:
    """The state of every global random generator a training step may draw from (dropout, a
    method's sampling): torch's on the CPU and on each initialised GPU, Python's ``random`` and
    NumPy's legacy generator, as tensors and plain values (so a checkpoint holds them)."""
    version, words, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                       "has_gauss": has_gauss, "cached": cached}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_random_state(state: dict) -> None:
    """Set every global random generator to ``state`` (:func:`random_state`), wherever a load's
    ``map_location`` put its tensors (a checkpoint resumed on a GPU)."""
    torch.set_rng_state(state["torch"].cpu())
    python = state["python"]
    random.setstate((python["version"], tuple(python["words"].cpu().tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].cpu().numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _serialise(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


__all__ = ["CheckpointWriteError", "DamagedCheckpointError", "DamagedCheckpointWarning", "ForeignFileError", "checkpoint_epoch", "load_tensors", "random_state",
           "read_checkpoint", "restore_random_state", "save_tensors", "write_checkpoint"]
