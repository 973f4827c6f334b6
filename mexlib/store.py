"""The run store: get a finished run, or train it once and keep it.

Layout under :func:`mexlib.paths.runs_dir`::

    backbone-<key>/   phase 1 of one configuration (shared by disjoint and mixed)
    run-<key>/        one regime of one configuration and seed
    work/<key>/       resumable checkpoints while a run trains
    damaged/          runs that failed their integrity check, moved aside

A key is the hash of the canonical configuration plus :data:`RESULTS_VERSION`, which changes
whenever the code's results would change. Each finished run folder holds ``config.json``,
``provenance.json`` (package version and git commit, library versions, device, wall time per
phase), ``history.json`` (per-epoch training curves), ``weights.pt``, ``logits.pt`` (every
exit's logits on the validation and test sets, with the labels) and ``manifest.json`` (size
and SHA-256 of each file). A run is written into a temporary folder and renamed into place
only when complete, so a crash never leaves a half-written run that reads as finished; a run
whose files do not match its manifest is reported, moved to ``damaged/`` and trained again.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import json
import platform
import shutil
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor

from . import __version__, hardware, paths
from .config import RunConfig, stable_hash
from .data import ImageData, dataset_spec, load_dataset
from .methods import training_method
from .models import MultiExitModel, exit_logits
from .streaming import StreamingData
from .train import DeviceData, build_model, resolve_device, train_backbone, train_regime

#: Bump when a change to the code changes what a run produces; old runs are then not reused.
RESULTS_VERSION = 2
_FILES = ("config.json", "provenance.json", "history.json", "weights.pt", "logits.pt")


class DamagedRunWarning(UserWarning):
    """A stored run failed its integrity check and will be trained again."""


class StaleCodeWarning(UserWarning):
    """Stored runs were trained by code that differs from the code now installed."""


#: The modules whose code determines what a run produces.
_RESULT_MODULES = ("config.py", "data.py", "methods", "train.py", "models")


def code_fingerprint() -> str:
    """A hash of the code that produces results (not evaluation, plots or notebooks), without
    its comments and docstrings: editing those neither warns about stored runs nor discards
    the checkpoints of runs in progress."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for name in _RESULT_MODULES:
        target = package / name
        for file in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(code_without_comments(file.read_text()).encode())
    return digest.hexdigest()[:16]


def code_without_comments(source: str) -> str:
    """``source`` as Python sees it: comments, docstrings and layout removed."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def backbone_key(config: RunConfig) -> str:
    return stable_hash(config.backbone_config(), salt=f"backbone-v{RESULTS_VERSION}")


def run_key(config: RunConfig) -> str:
    return stable_hash(config.to_dict(), salt=f"run-v{RESULTS_VERSION}")


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
            self._logits = torch.load(self.path / "logits.pt", weights_only=True)
        return self._logits[f"{split}_logits"], self._logits[f"{split}_labels"]

    def state_dict(self) -> dict:
        return torch.load(self.path / "weights.pt", weights_only=True, map_location="cpu")

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
    """Finished runs by configuration, trained on first request."""

    def __init__(self, root: str | Path | None = None, device: str | torch.device | None = "auto",
                 progress: bool = True):
        self.root = Path(root) if root is not None else paths.runs_dir()
        self.device = resolve_device(device)
        self.progress = progress
        self._data: dict[tuple, DeviceData] = {}
        self.trained: list[str] = []  # folder names trained by this store object, in order
        self.fingerprint = code_fingerprint()
        self._warned_stale = False

    # --- lookup --------------------------------------------------------------------------

    def resolve(self, config: RunConfig) -> RunConfig:
        """The configuration as it trains on this store's device: bf16 becomes fp32 where the
        device has no native bf16 (one warning), so such a run is keyed and stored as the fp32
        run it is (:mod:`mexlib.hardware`); a method without training of its own becomes the
        method whose runs it reads (PBEE reads SDN's)."""
        precision = hardware.training_precision(config.precision, self.device)
        method = training_method(config.method)
        if (precision, method) == (config.precision, config.method):
            return config
        return replace(config, precision=precision, method=method)

    def find(self, config: RunConfig) -> StoredRun | None:
        return self._find(f"run-{run_key(self.resolve(config))}")

    def find_backbone(self, config: RunConfig) -> StoredRun | None:
        return self._find(f"backbone-{backbone_key(self.resolve(config))}")

    def _find(self, name: str) -> StoredRun | None:
        path = self.root / name
        if not path.exists():
            return None
        problem = verify(path)
        if problem is None:
            self._check_code(path)
            return StoredRun(path)
        damaged = self.root / "damaged" / f"{name}-{uuid.uuid4().hex[:8]}"
        damaged.parent.mkdir(parents=True, exist_ok=True)
        path.rename(damaged)
        warnings.warn(f"stored run {path} is damaged ({problem}); moved it to {damaged} and "
                      f"training it again", DamagedRunWarning, stacklevel=3)
        return None

    def _check_code(self, path: Path) -> None:
        stored = json.loads((path / "provenance.json").read_text()).get("code_fingerprint")
        if stored != self.fingerprint and not self._warned_stale:
            self._warned_stale = True
            warnings.warn(f"{path.name} (and maybe other stored runs) was trained by other code "
                          f"(fingerprint {stored}, now {self.fingerprint}); it is reused because "
                          f"RESULTS_VERSION ({RESULTS_VERSION}) is unchanged. If the change alters "
                          f"results, bump mexlib.store.RESULTS_VERSION.", StaleCodeWarning, stacklevel=4)

    @contextlib.contextmanager
    def _training(self, key: str):
        """Hold ``work/<key>``: one process trains a key at a time; a checkpoint left by other
        code is discarded rather than resumed."""
        workdir = self.root / "work" / key
        workdir.parent.mkdir(parents=True, exist_ok=True)
        with open(workdir.with_name(f"{key}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
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
                # The lock file stays: deleting it while another process waits on it would let
                # a third process lock a new file and train the same key at the same time.
                fcntl.flock(lock, fcntl.LOCK_UN)

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
        with self._training(key) as workdir:
            found = self.find(config)  # another process may have finished it meanwhile
            if found is not None:
                return found
            data = self._device_data(config)
            started = time.perf_counter()
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
        with self._training(key) as workdir:
            found = self.find_backbone(config)
            if found is not None:
                return found
            data = self._device_data(config)
            started = time.perf_counter()
            model, result = train_backbone(config, data, self.device, workdir, self.progress)
            return self._write(f"backbone-{key}", config.to_dict(), model.backbone.state_dict(),
                               model, data, [result.to_dict()], time.perf_counter() - started,
                               workdir, final_exit_only=True)

    def _device_data(self, config: RunConfig) -> DeviceData | StreamingData:
        key = DeviceData.key(config)
        if key not in self._data:  # the tensors go to the device once, shared by every seed
            if dataset_spec(config.dataset).streamed:  # too large for memory: decoded batch by batch
                self._data[key] = StreamingData.from_config(config, self.device)
            else:
                self._data[key] = DeviceData.from_dataset(config, _dataset(config.dataset), self.device)
        return replace(self._data[key], seed=config.seed)

    # --- writing -------------------------------------------------------------------------

    def _write(self, name: str, config: dict, weights: dict, model: MultiExitModel,
               data: DeviceData, phases: list[dict], seconds: float, workdir: Path,
               final_exit_only: bool = False) -> StoredRun:
        logits = {}
        for split in ("val", "test"):
            values, labels = exit_logits(model, data.eval_loader(split))
            logits[f"{split}_logits"] = values[-1:] if final_exit_only else values
            logits[f"{split}_labels"] = labels
        tmp = self.root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        (tmp / "history.json").write_text(json.dumps(phases, indent=1))
        (tmp / "provenance.json").write_text(json.dumps(
            {**provenance(config, self.device, seconds, phases),
             "code_fingerprint": self.fingerprint}, indent=1))
        torch.save({k: v.detach().cpu() for k, v in weights.items()}, tmp / "weights.pt")
        torch.save(logits, tmp / "logits.pt")
        (tmp / "manifest.json").write_text(json.dumps(
            {f: _describe(tmp / f) for f in _FILES}, indent=1))
        final = self.root / name
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same run first: keep theirs
            shutil.rmtree(tmp)
        shutil.rmtree(workdir, ignore_errors=True)
        self.trained.append(name)
        return StoredRun(final)


def verify(path: Path) -> str | None:
    """None when the run folder matches its manifest, else what is wrong."""
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return "no manifest.json"
    try:
        expected = json.loads(manifest.read_text())
    except json.JSONDecodeError as error:
        return f"unreadable manifest.json ({error})"
    for name in _FILES:
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if expected.get(name) != _describe(file):
            return f"{name} does not match its checksum"
    return None


def _describe(file: Path) -> dict:
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return {"bytes": file.stat().st_size, "sha256": digest}


_DATASETS: dict[str, ImageData] = {}


def _dataset(name: str) -> ImageData:
    if name not in _DATASETS:
        _DATASETS[name] = load_dataset(name)
    return _DATASETS[name]


def provenance(config: dict, device: torch.device, seconds: float, phases: list[dict]) -> dict:
    import torchvision

    return {
        "config": config,
        "results_version": RESULTS_VERSION,
        "mexlib_version": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "hardware": hardware.describe(device),
        "wall_time_seconds": seconds,
        "phase_wall_time_seconds": {p["phase"]: p.get("wall_time") for p in phases},
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
    }


def _git_commit() -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=paths.ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) or None


def get_or_run(config: RunConfig, device: str | None = "auto", progress: bool = True) -> StoredRun:
    """Shortcut for ``RunStore(device=device, progress=progress).get_or_run(config)``."""
    return RunStore(device=device, progress=progress).get_or_run(config)


__all__ = ["DamagedRunWarning", "RESULTS_VERSION", "StaleCodeWarning", "code_fingerprint", "RunStore", "StoredRun", "backbone_key",
           "get_or_run", "run_key", "verify"]
