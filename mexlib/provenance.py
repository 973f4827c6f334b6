"""Where a result came from: the code that computed it and the machine that ran it.

- :func:`code_fingerprint`: a hash of the code that determines what a *run* produces (the
  trainer, the run store and every module of the package they import: config, data, the data on
  the device, hardware rules, methods, models; :func:`result_modules`), stored with every run: a
  run trained by other code is reported, and a checkpoint left by other code is not resumed.
- :func:`source_fingerprint`: a hash of the code of any functions and modules, for the store's
  cached results (:meth:`mexlib.store.RunStore.cached`): a result is keyed by the source of the
  code that computed it, so editing that code computes it afresh.
- :func:`provenance`: what is written beside every stored run.

Hashes ignore comments, docstrings and layout (:func:`code_without_comments`).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import platform
import subprocess
import sys
import types
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__, hardware, paths

#: Where the code that determines what a run produces starts: the trainer and the run store (which
#: resolves a configuration for its device: precision, memory layout). Everything they import from
#: the package, however indirectly, counts too (:func:`result_modules`).
RESULT_ROOTS = ("train", "store")


@functools.lru_cache(maxsize=None)
def result_modules(roots: tuple[str, ...] = RESULT_ROOTS) -> tuple[str, ...]:
    """The package's files (relative to ``mexlib/``) that ``roots`` import, directly or not, and
    the roots themselves: derived from the code's own imports, never a list kept by hand."""
    package = paths.PACKAGE

    def file_of(module: str) -> Path | None:
        target = package.joinpath(*module.split(".")[1:])
        for candidate in (target / "__init__.py", target.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    def imports(module: str) -> set[str]:
        file = file_of(module)
        here = module if file.name == "__init__.py" else module.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here.split(".")[:len(here.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
                if target.split(".")[0] == "mexlib":
                    found |= {f"{target}.{a.name}" if file_of(f"{target}.{a.name}") else target for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "mexlib"}
        return {m for m in found if file_of(m) is not None}

    seen: set[str] = set()
    todo = [f"mexlib.{root}" for root in roots]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += sorted(imports(module))
    return tuple(sorted(file_of(m).relative_to(package).as_posix() for m in seen))


def files_fingerprint(names) -> str:
    """A hash of the package's files and folders ``names`` (relative to ``mexlib/``), without
    comments and docstrings."""
    digest = hashlib.sha256()
    package = paths.PACKAGE
    for name in names:
        target = package / name
        for file in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(code_without_comments(file.read_text()).encode())
    return digest.hexdigest()[:16]


def code_fingerprint() -> str:
    """A hash of the code that produces results (not evaluation, plots or notebooks), without
    its comments and docstrings: editing those neither warns about stored runs nor discards
    the checkpoints of runs in progress."""
    return files_fingerprint(result_modules())


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


def source_fingerprint(*objects) -> str:
    """A hash of the source of ``objects``: functions, classes or modules, each taken as the
    whole module that defines it (so the helpers a function calls count too), comments and
    docstrings left out. A function without a module file (typed into a notebook) counts by its
    own source, or else by its bytecode."""
    digest = hashlib.sha256()
    for text in sorted({_source(obj) for obj in objects}):
        digest.update(text.encode())
    return digest.hexdigest()[:16]


def _source(obj) -> str:
    module = obj if isinstance(obj, types.ModuleType) else sys.modules.get(getattr(obj, "__module__", None) or "")
    for target in (module, obj):
        try:
            return code_without_comments(inspect.getsource(target)) if target is not None else ""
        except (OSError, TypeError, SyntaxError):
            continue
    code = getattr(obj, "__code__", None)
    if code is None:
        raise TypeError(f"no source or bytecode to fingerprint in {obj!r}")
    return repr((code.co_code, code.co_consts, code.co_names))


def provenance(config: dict, device: torch.device, seconds: float, phases: list[dict],
               results_version: int) -> dict:
    """Where, when and by what a run was trained: versions, commit, device, wall time per phase."""
    import torchvision

    return {
        "config": config,
        "results_version": results_version,
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


__all__ = ["RESULT_ROOTS", "result_modules", "code_fingerprint", "code_without_comments", "files_fingerprint", "provenance", "source_fingerprint"]
