"""Running a child process that may hang or crash, for the tests of what a CPU does."""

from __future__ import annotations

import resource
import subprocess


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_with_timeout(args: list[str], env: dict, timeout: float, cwd=None,
                     merge_stderr: bool = False) -> tuple[str, str, int | None]:
    """Run ``args``: its stdout, its stderr ("" when merged into stdout) and its exit status,
    None when it was killed at ``timeout`` seconds (a hang), negative when a signal ended it (a
    crash). Core dumps are off: a crash is an outcome these tests expect, and the core of a
    torch process (QEMU writes one into ``cwd``) is large."""
    process = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                               text=True, preexec_fn=_no_core_dumps, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
        return out, err or "", process.returncode
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return out, err or "", None
