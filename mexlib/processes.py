"""The processes below one process, found and stopped (Linux: read from ``/proc``; elsewhere none).

A notebook run by ``mexlib.reproduce`` starts a kernel in a session of its own, and the kernel
starts its training jobs (``--executor local``) as children of its own: killing the first
process, or its process group, leaves the others running. Whatever must stop a whole reproduce
(``benchmarks/gpu_check.py`` at the end of its time; the test suite after a test) walks the tree:

    kill(descendants(process.pid) | {process.pid})
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


def _children() -> dict[int, list[int]]:
    """Every process's children, from ``/proc/<pid>/stat`` (the parent is its fourth field)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(pid: int | None = None) -> set[int]:
    """The processes below ``pid`` (default: this one), at any depth."""
    tree = _children()
    found: set[int] = set()
    todo = [os.getpid() if pid is None else pid]
    while todo:
        for child in tree.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill(pids: set[int], wait: float = 5.0) -> set[int]:
    """SIGKILL to ``pids`` and to each one's process group (unless it is this process's); returns
    the pids that were still there. Those that are this process's children are reaped (waiting up
    to ``wait`` seconds in all), so none stays a zombie."""
    own = os.getpgid(0)
    alive, groups = set(), set()
    for pid in pids:
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            continue
        alive.add(pid)
        if group != own:
            groups.add(group)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    for pid in alive:
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
            except ChildProcessError:  # not ours to reap (a grandchild), or reaped already
                break
            time.sleep(0.01)
    return alive
