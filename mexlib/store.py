"""The run store: get a finished run, or train it once and keep it; and every other result the
study keeps (recordings of training, analyses), through one API.

Layout under :func:`mexlib.paths.runs_dir`::

    backbone-<key>/        phase 1 of one configuration (shared by disjoint and mixed)
    run-<key>/             one regime of one configuration and seed
    records-<key>-<what>/  what a recorder saw while a run trained again (mexlib.analysis.recording)
    result-<name>-<key>/   a cached result (:meth:`RunStore.cached`): an analysis, a measurement
    work/<key>/            resumable checkpoints while something trains; work/<key>.lock, .failed.json,
                           .queued.json: the state of that task (:class:`WorkArea`)
    damaged/               entries that failed their integrity check, moved aside

**One way to write.** Every entry is a folder written into a temporary name and renamed into
place only when complete, with ``manifest.json`` (size and SHA-256 of each file), so a crash never
leaves a half-written entry that reads as finished; an entry whose files do not match its manifest
is reported, moved to ``damaged/`` and computed again (:meth:`RunStore.keep`, :meth:`RunStore.kept`).

**Keys.** A run's key is the hash of its canonical configuration plus :data:`RESULTS_VERSION`,
which changes whenever the code's results would change; a run trained by code whose
:func:`mexlib.provenance.code_fingerprint` differs is reported. A cached result's key is the hash
of its inputs *and of the source of the code that computed it*, so it is never read back after
that code changed. Each run folder holds ``config.json``, ``provenance.json`` (package version and
git commit, library versions, device, wall time per phase), ``history.json`` (per-epoch training
curves), ``weights.pt`` and ``logits.pt`` (every exit's logits on the validation and test sets,
with the labels).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import hardware, paths
from .arguments import flag
from .checkpoints import CheckpointWriteError, ForeignFileError, load_tensors, save_tensors
from .config import RunConfig, stable_hash
from .device_data import DataCache, DeviceData, StreamingData
from .hardware import resolve_device
from .methods import TrainingDiverged, training_method
from .models import MultiExitModel, arch_spec, exit_logits
from .provenance import code_fingerprint, files_fingerprint, provenance, source_fingerprint
from .train import build_model, train_backbone, train_regime
from .work_area import WorkArea
from .entries import (REPLACEMENTS, DamagedRunWarning, StoreWriteError, UnreadableEntryError,  # noqa: F401
                      _exists, _move_aside, _owner, _plain, _unplain, _writable, clean, leftovers,
                      write_entry)
from .entries import verify as _verify_files

#: Bump when a change to the code changes what a run produces; old runs are then not reused.
RESULTS_VERSION = 2
#: The file of an entry made by the training code (:meth:`RunStore.keep` ``of_code``): its fingerprint.
CODE_FILE = "code.json"
#: The files of every stored run (and phase-1 backbone).
RUN_FILES = ("config.json", "provenance.json", "history.json", "weights.pt", "logits.pt")
_FILES = RUN_FILES
#: Code that every cached result depends on besides its own: the analyses' measurements.
ANALYSIS_CODE = ("analysis",)


class StoreWriteWarning(UserWarning):
    """A computed result could not be kept (a read-only or full store); it is returned anyway."""


class StaleCodeWarning(UserWarning):
    """Stored runs were trained by code that differs from the code now installed."""


class StaleRunError(RuntimeError):
    """In strict mode (:func:`strict_mode`), a stored run was trained by other code."""


#: Every read of a stored run that other code trained, in order: (folder name, the fingerprint
#: of the code that trained it) (:func:`stale_runs`).
_STALE: list[tuple[str, str]] = []


def strict_mode() -> bool:
    """Whether stale runs are refused: ``MEXLIB_STRICT`` says yes (1, true, yes, on, any case;
    ``make reproduce STRICT=1``; the test suite sets it) or no (0, false, no, off or unset); any
    other value raises, naming the valid ones."""
    value = os.environ.get("MEXLIB_STRICT", "")
    try:
        return flag(value)
    except argparse.ArgumentTypeError as error:
        raise ValueError(f"MEXLIB_STRICT: {error}") from None


def stale_runs(since: int = 0) -> dict[str, str]:
    """The stored runs this process reused although other code trained them (folder name → that
    code's fingerprint), in the order they were first read; ``since``: only the reads after the
    first ``since`` (:func:`stale_reads`), what one chapter read."""
    return dict(_STALE[since:])


def stale_reads() -> int:
    """How many reads of stale runs this process has made: a mark for :func:`stale_runs`."""
    return len(_STALE)


def backbone_key(config: RunConfig) -> str:
    return stable_hash(config.backbone_config(), salt=f"backbone-v{RESULTS_VERSION}")


def run_key(config: RunConfig) -> str:
    return stable_hash(config.to_dict(), salt=f"run-v{RESULTS_VERSION}")


def _key_of(kind: str, config_file: Path) -> str | None:
    """The key of the entry kind ``kind`` (``run``, ``backbone``) that the stored configuration
    gives, or None when it is not a configuration."""
    try:
        values = json.loads(config_file.read_text())
        if kind == "run":
            return stable_hash(values, salt=f"run-v{RESULTS_VERSION}")
        return backbone_key(RunConfig.from_dict(values))
    except (ValueError, TypeError, KeyError):
        return None


@dataclass
class StoredRun:
    """A finished run as stored: read lazily from its folder (logits once)."""

    path: Path
    _logits: dict | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> str:
        return self.path.name.split("-", 1)[1]

    @property
    def config(self) -> dict:
        return self._json("config.json")

    @property
    def provenance(self) -> dict:
        return self._json("provenance.json")

    @property
    def history(self) -> list[dict]:
        """One entry per phase: ``phase``, ``history`` (per-epoch rows), ``best_epoch``, ..."""
        return self._json("history.json")

    def logits(self, split: str = "test") -> tuple[Tensor, Tensor]:
        """Every exit's logits ``[K, N, C]`` and the labels ``[N]`` on ``"val"`` or ``"test"``."""
        if split not in ("val", "test"):
            raise ValueError(f"unknown split {split!r}; valid splits: val, test")
        if self._logits is None:
            self._logits = load_tensors(self.path / "logits.pt")
        return self._logits[f"{split}_logits"], self._logits[f"{split}_labels"]

    def state_dict(self) -> dict:
        return load_tensors(self.path / "weights.pt", map_location="cpu")

    def model(self) -> MultiExitModel:
        """The trained model, rebuilt from the configuration and loaded with the weights."""
        model = build_model(RunConfig.from_dict(self.config))
        state = self.state_dict()
        if self.path.name.startswith("backbone-"):
            model.backbone.load_state_dict(state)
        else:
            model.load_state_dict(state)
        return model.eval()

    def _json(self, name: str):
        return json.loads((self.path / name).read_text())


class RunStore:
    """Finished runs by configuration, trained on first request, and every other kept result."""

    def __init__(self, root: str | Path | None = None, device: str | torch.device | None = "auto",
                 progress: bool = True, strict: bool | None = None):
        self.root = Path(root) if root is not None else paths.runs_dir()
        self.device = resolve_device(device)
        self.progress = progress
        self._data = DataCache(self.device)
        self.trained: list[str] = []  # folder names trained by this store object, in order
        self.fingerprint = code_fingerprint()
        self.work = WorkArea(self.root, self.fingerprint)
        self.strict = strict_mode() if strict is None else strict  # refuse runs of other code
        self._warned_stale = False

    # --- lookup --------------------------------------------------------------------------

    def resolve(self, config: RunConfig, device: str | torch.device | None = None) -> RunConfig:
        """The configuration as it trains on this store's device (or on ``device``, a job's):
        bf16 becomes fp32 where the device has no native bf16 (one warning), so such a run is
        keyed and stored as the fp32 run it is (:mod:`mexlib.hardware`); a method without
        training of its own becomes the method whose runs it reads (PBEE reads SDN's). A CUDA
        device this machine does not have (a sweep planned here for a cluster's GPUs) is
        assumed to have native bf16. ``compile="auto"`` becomes the step mode measured fastest
        on the device for the model's layout (:func:`mexlib.hardware.step_mode`)."""
        target = self.device if device in (None, "auto") else torch.device(device)
        if target.type == "cuda" and not torch.cuda.is_available():
            precision = config.precision
        else:
            precision = hardware.training_precision(config.precision, target)
        method = training_method(config.method)
        step = hardware.step_mode(config.compile, target, arch_spec(config.arch).layout)
        if (precision, method, step) == (config.precision, config.method, config.compile):
            return config
        return replace(config, precision=precision, method=method, compile=step)

    def find(self, config: RunConfig) -> StoredRun | None:
        return self._find(f"run-{run_key(self.resolve(config))}")

    def find_backbone(self, config: RunConfig) -> StoredRun | None:
        return self._find(f"backbone-{backbone_key(self.resolve(config))}")

    def _find(self, name: str) -> StoredRun | None:
        path = self._locate(name, _FILES)
        if path is None:
            return None
        self._check_code(path)
        return StoredRun(path)

    def _locate(self, name: str, required=()) -> Path | None:
        """Where the entry ``name`` is sound (:func:`problem_of`): its own folder, or the
        replacement kept in ``replacements/`` while a damaged entry that could not be moved aside
        holds its name (:func:`write_entry`); None when neither is there and sound. A damaged one
        is moved aside, or left unread where it cannot be moved."""
        for where in (name, f"{REPLACEMENTS}/{name}"):
            path = self.root / where
            if not _exists(path):
                continue
            problem = problem_of(path, required)
            if problem is None:
                return path
            self._set_aside(where, f"is damaged ({problem})", stacklevel=6)
        return None

    def _set_aside(self, name: str, problem: str, stacklevel: int) -> bool:
        """Move the entry ``name`` into ``damaged/`` (kept for a look, never read again) and say so;
        whether it is gone. Another process may have moved it first (then there is nothing left
        to move); a store this process may not change (read-only, or another user's entry) keeps
        it where it is, unread, and the warning says so."""
        path = self.root / name
        try:
            where, gone = f"moved it to {_move_aside(path, self.root)}", True
        except FileNotFoundError:  # moved aside by another process that found it as well
            where, gone = "another process moved it aside", True
        except OSError as error:  # a read-only store, another user's entry: leave it, read around it
            where = (f"could not move it aside ({error.strerror or error}{_owner(path)}), so it stays and "
                     f"is not read")
            gone = False
        warnings.warn(f"stored entry {path} {problem}; {where}", DamagedRunWarning, stacklevel=stacklevel)
        return gone

    def _check_code(self, path: Path, stored: str | None = None) -> None:
        """Note an entry made by other code (:func:`stale_runs`) and warn once; in strict mode
        refuse it. ``stored``: the fingerprint of the code that made it (default: a run's, from
        its provenance)."""
        if stored is None:
            stored = json.loads((path / "provenance.json").read_text()).get("code_fingerprint")
        if stored == self.fingerprint:
            return
        if self.strict:
            raise StaleRunError(f"{path} was made by other code (fingerprint {stored}, now {self.fingerprint}) "
                                f"and strict mode (MEXLIB_STRICT=1) refuses it: compute it again (delete the folder, "
                                f"or bump mexlib.store.RESULTS_VERSION if the change alters results), or leave "
                                f"strict mode to reuse it with a note in the outputs")
        _STALE.append((path.name, stored))
        if not self._warned_stale:
            self._warned_stale = True
            warnings.warn(f"{path.name} (and maybe other stored runs) was made by other code "
                          f"(fingerprint {stored}, now {self.fingerprint}); it is reused because "
                          f"RESULTS_VERSION ({RESULTS_VERSION}) is unchanged. If the change alters "
                          f"results, bump mexlib.store.RESULTS_VERSION.", StaleCodeWarning, stacklevel=4)

    def training(self, key: str):
        """Hold ``work/<key>`` while training it (:meth:`WorkArea.lock`)."""
        return self.work.lock(key)

    # --- get or run ----------------------------------------------------------------------

    def get_or_run(self, config: RunConfig) -> StoredRun:
        """The finished run of ``config``: from the store, or trained now and stored."""
        config = self.resolve(config)
        found = self.find(config)
        if found is not None:
            return found
        backbone_state, backbone_run = None, None
        if "backbone" in config.phases:
            backbone_run = self.get_or_run_backbone(config)
            backbone_state = backbone_run.state_dict()
        key = run_key(config)
        with self.training(key) as workdir:
            found = self.find(config)  # another process may have finished it meanwhile
            if found is not None:
                return found
            data = self.device_data(config)
            started = time.perf_counter()
            with _naming(config, f"run-{key}"):
                model, results = train_regime(config, data, self.device, backbone_state, workdir,
                                              self.progress)
            phases = [{"phase": "backbone", "stored_run": backbone_run.path.name}] if backbone_run else []
            phases += [r.to_dict() for r in results]
            return self._write(f"run-{key}", config.to_dict(), model.state_dict(), model, data,
                               phases, time.perf_counter() - started, workdir)

    def get_or_run_backbone(self, config: RunConfig) -> StoredRun:
        """Phase 1 of ``config``, keyed on :meth:`RunConfig.backbone_config` alone."""
        config = self.resolve(config)
        found = self.find_backbone(config)
        if found is not None:
            return found
        key = backbone_key(config)
        with self.training(key) as workdir:
            found = self.find_backbone(config)
            if found is not None:
                return found
            data = self.device_data(config)
            started = time.perf_counter()
            with _naming(config, f"backbone-{key}"):
                model, result = train_backbone(config, data, self.device, workdir, self.progress)
            return self._write(f"backbone-{key}", config.to_dict(), model.backbone.state_dict(),
                               model, data, [result.to_dict()], time.perf_counter() - started,
                               workdir, final_exit_only=True)

    def device_data(self, config: RunConfig) -> DeviceData | StreamingData:
        """``config``'s data on this store's device, as its runs train on it (shared by every
        seed and run that needs the same tensors)."""
        return self._data.get(self.resolve(config))

    # --- every other kept result -----------------------------------------------------------

    def keep(self, name: str, objects: dict[str, Any], of_code: bool = False) -> Path:
        """Write ``objects`` (file name → object: ``.json`` as JSON, anything else with
        ``torch.save``) as the entry ``name``, atomically with a manifest; an entry of that name
        that another process finished first is kept instead. ``of_code``: the entry is made by
        the code that trains runs (a recording of training), so it carries that code's
        fingerprint (``code.json``) and is read back as runs are (:meth:`kept`)."""
        _check_name(name)
        if of_code:
            objects = {**objects, CODE_FILE: {"code_fingerprint": self.fingerprint}}
        writers = {file: (lambda path, obj=obj: path.write_text(json.dumps(obj, indent=1)))
                   if file.endswith(".json") else (lambda path, obj=obj: save_tensors(_plain(obj), path))
                   for file, obj in objects.items()}
        return write_entry(self.root / name, writers, check=problem_of)

    def kept(self, name: str, of_code: bool = False) -> dict[str, Any] | None:
        """The objects of entry ``name`` (as :meth:`keep` wrote them), or None when there is none
        or it is damaged (then moved aside, with a warning). ``of_code``: an entry made by the
        training code, whose fingerprint is checked as a run's is (noted as stale, or refused in
        strict mode: :class:`StaleRunError`); one without a fingerprint counts as other code's."""
        _check_name(name)
        for where in (name, f"{REPLACEMENTS}/{name}"):  # as _locate, loading each file once
            path = self.root / where
            if not _exists(path):
                continue
            problem = problem_of(path)
            if problem is None:
                try:
                    files = json.loads((path / "manifest.json").read_text())
                    found = {file: json.loads((path / file).read_text()) if file.endswith(".json")
                             else _unplain(load_tensors(path / file)) for file in files}
                    break
                except ForeignFileError as error:  # a pickle of objects (older code's): damage too
                    problem = f"it holds more than tensors and plain values ({error})"
            self._set_aside(where, f"is damaged ({problem})", stacklevel=3)
        else:
            return None
        if of_code:
            stamp = found.pop(CODE_FILE, None)
            self._check_code(path, stamp.get("code_fingerprint") if isinstance(stamp, dict) else "unknown")
        return found

    def cached(self, name: str, inputs: dict[str, Any], compute: Callable[[], Any], code=()) -> Any:
        """``compute()``'s result, kept as the entry ``result-<name>-<key>``: the key hashes
        ``inputs`` (JSON values: run keys, parameters), the source of ``compute`` and of every
        function or module in ``code`` (each with its whole module: :func:`source_fingerprint`)
        and the analyses' code, so the same inputs computed by the same code read it back and a
        change of either computes afresh."""
        _check_name(name)
        key = stable_hash({"inputs": inputs, "code": source_fingerprint(compute, *code),
                           "analysis": files_fingerprint(ANALYSIS_CODE)})
        entry = f"result-{name}-{key}"
        found = self.kept(entry)
        if found is not None:
            return found["result.pt"]
        writable = _writable(self.root)
        if not writable:
            warnings.warn(f"the store {self.root} cannot be written (read-only, or not yours): computing {entry} "
                          f"without keeping it; point MEXLIB_RUNS at a writable store to keep it", StoreWriteWarning,
                          stacklevel=2)
        result = compute()
        if writable:
            try:
                self.keep(entry, {"result.pt": result, "inputs.json": inputs})
            except StoreWriteError as error:  # a full disk: the result is not lost, only not kept
                warnings.warn(f"{error}; the result is returned without being kept", StoreWriteWarning, stacklevel=2)
        return result

    # --- writing a run ---------------------------------------------------------------------

    def _write(self, name: str, config: dict, weights: dict, model: MultiExitModel,
               data: DeviceData, phases: list[dict], seconds: float, workdir: Path,
               final_exit_only: bool = False) -> StoredRun:
        logits = {}
        for split in ("val", "test"):
            values, labels = exit_logits(model, data.eval_loader(split))
            logits[f"{split}_logits"] = values[-1:] if final_exit_only else values
            logits[f"{split}_labels"] = labels
        record = {**provenance(config, self.device, seconds, phases, RESULTS_VERSION),
                  "code_fingerprint": self.fingerprint}
        final = write_entry(self.root / name, check=problem_of, writers={
            "config.json": lambda p: p.write_text(json.dumps(config, indent=1)),
            "history.json": lambda p: p.write_text(json.dumps(phases, indent=1)),
            "provenance.json": lambda p: p.write_text(json.dumps(record, indent=1)),
            "weights.pt": lambda p: save_tensors({k: v.detach().cpu() for k, v in weights.items()}, p),
            "logits.pt": lambda p: save_tensors(logits, p)})
        shutil.rmtree(workdir, ignore_errors=True)
        self.trained.append(name)
        return StoredRun(final)


def describe(config: RunConfig) -> str:
    """A run in a few words: architecture, dataset, regime, method and seed."""
    return f"{config.arch} on {config.dataset}, {config.regime}, {config.method}, seed {config.seed}"


@contextlib.contextmanager
def _naming(config: RunConfig, entry: str):
    """Training errors that name only a phase and an epoch, re-raised naming the run (its
    configuration and the entry it was to be stored as)."""
    try:
        yield
    except TrainingDiverged as error:
        raise TrainingDiverged(f"{describe(config)} ({entry}): {error}") from error
    except CheckpointWriteError as error:
        raise CheckpointWriteError(error.errno, f"{describe(config)} ({entry}): {error.strerror}") from error


def verify(path: Path, required=RUN_FILES) -> str | None:
    """None when the entry folder matches its manifest and has the ``required`` files (default: a
    run's), else what is wrong (:func:`mexlib.entries.verify`)."""
    return _verify_files(path, required)


def problem_of(path: Path, required=(), deep: bool = False) -> str | None:
    """None when the entry at ``path`` may be served, else what is wrong: its files against its
    manifest (:func:`verify`); for a run or a phase-1 backbone, its ``config.json`` against the key
    its name gives (a folder renamed to another configuration's key is damage); with ``deep``,
    every tensor file loads as tensors and plain values (not a pickle of objects)."""
    problem = verify(path, required)
    if problem is not None:
        return problem
    kind, _, key = path.name.partition("-")
    if kind in ("run", "backbone"):
        stored = _key_of(kind, path / "config.json")
        if stored != key:
            return f"it holds the configuration of {stored or 'no run'}, not of the key it is stored under"
    if deep:
        for file in json.loads((path / "manifest.json").read_text()):
            if not file.endswith(".json"):
                try:
                    load_tensors(path / file)
                except ForeignFileError as error:
                    return f"it holds more than tensors and plain values ({error})"
    return None


def _check_name(name: str) -> None:
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or name.startswith("."):
        raise ValueError(f"an entry's name is letters, digits, '-', '_' and '.', not starting with '.'; got {name!r}")


def get_or_run(config: RunConfig, device: str | None = "auto", progress: bool = True) -> StoredRun:
    """Shortcut for ``RunStore(device=device, progress=progress).get_or_run(config)``."""
    return RunStore(device=device, progress=progress).get_or_run(config)


__all__ = ["DamagedRunWarning", "REPLACEMENTS", "RESULTS_VERSION", "RUN_FILES", "RunStore", "StaleCodeWarning", "StaleRunError", "StoreWriteError",
           "StoreWriteWarning", "UnreadableEntryError",
           "StoredRun", "stale_reads", "stale_runs", "strict_mode",
           "WorkArea",
           "backbone_key", "clean", "get_or_run", "leftovers", "problem_of", "run_key", "verify", "write_entry"]
