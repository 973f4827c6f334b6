"""The processes below one process, found and stopped, on every OS (through ``psutil``).

A notebook run by ``mexlib.reproduce`` starts a kernel in a session of its own, and the kernel
starts its training jobs (``--executor local``) as children of its own: killing the first
process, or its process group, leaves the others running. Whatever must stop a whole tree (a
sweep stopped by Ctrl-C or ``kill``; ``benchmarks/gpu_check.py`` at the end of its time; the
test suite after a test) walks it:

    kill(descendants(process.pid) | {process.pid})
"""

from __future__ import annotations

import os
import signal
import time

import psutil


def descendants(pid: int | None = None) -> set[int]:
    """The processes below ``pid`` (default: this one), at any depth; none if it has ended."""
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return set()


def kill(pids: set[int], wait: float = 5.0) -> set[int]:
    """Kill ``pids`` (SIGKILL where there are signals), each with its process group where it leads
    one of its own (not this process's group); returns the pids that were still there. Waits up to
    ``wait`` seconds in all for them to end, reaping those that are this process's children so that
    none stays a zombie; another process's child counts as ended once it is a zombie (reaping it is
    its parent's, or init's, business, which may take long in a container)."""
    own = os.getpgid(0) if hasattr(os, "getpgid") else None
    alive = []
    for pid in pids:
        try:
            alive.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    ours = [process for process in alive if _parent(process) == os.getpid()]  # before they are orphans
    if hasattr(os, "killpg"):
        groups = set()
        for process in alive:
            try:
                group = os.getpgid(process.pid)
            except ProcessLookupError:
                continue
            if group != own:
                groups.add(group)
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for process in alive:
        try:
            process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    deadline = time.monotonic() + wait
    psutil.wait_procs(ours, timeout=wait)  # reaps them
    for process in alive:
        while process not in ours and not _ended(process) and time.monotonic() < deadline:
            time.sleep(0.01)
    return {process.pid for process in alive}


def _parent(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


def _ended(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
