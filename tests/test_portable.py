"""mexlib off Linux: no Linux-only call on a path a user runs. The library's own code is read for
such calls, and the study's paths run with them removed from every Python process (as on macOS and
Windows): import, a smoke training into a store, the sweep's local executor and a notebook run."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Calls and modules that exist only on Linux (or only on POSIX), with the portable way in.
LINUX_ONLY = {"os.sched_getaffinity": "mexlib.hardware.usable_cores", "fcntl": "filelock",
              "/proc": "psutil (mexlib.processes)"}
#: The places that may use them, each behind a check that the OS has it.
ALLOWED = {("hardware.py", "os.sched_getaffinity"), ("work_area.py", "fcntl")}


def _linux_only_uses(file: Path) -> list[str]:
    tree = ast.parse(file.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"fcntl (line {node.lineno})" for a in node.names
                      if a.name == "fcntl" and (file.name, "fcntl") not in ALLOWED]
        elif isinstance(node, ast.ImportFrom) and node.module == "fcntl":
            found.append(f"fcntl (line {node.lineno})")
        elif isinstance(node, ast.Attribute) and node.attr == "sched_getaffinity":
            if (file.name, "os.sched_getaffinity") not in ALLOWED:
                found.append(f"os.sched_getaffinity (line {node.lineno})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("/proc"):
            found.append(f"{node.value} (line {node.lineno})")
    return found


def test_the_library_makes_no_linux_only_call():
    uses = {str(f.relative_to(ROOT)): _linux_only_uses(f) for f in sorted((ROOT / "mexlib").rglob("*.py"))}
    uses = {f: u for f, u in uses.items() if u}
    assert not uses, f"Linux-only calls on a user's path (portable: {LINUX_ONLY}): {uses}"


SITE = """
import os
for name in ("sched_getaffinity", "process_cpu_count"):
    if hasattr(os, name):
        delattr(os, name)
"""

STUDY = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    assert not hasattr(os, "sched_getaffinity")
    import nbformat, papermill
    from mexlib import hardware
    from mexlib.config import make_config
    from mexlib.store import RunStore
    from mexlib.sweep import sweep
    assert hardware.usable_cores() == os.cpu_count()
    root = Path(sys.argv[1])
    store = RunStore(root / "runs", device="cpu", progress=False)
    run = store.get_or_run(make_config("smoke", regime="joint", epochs=1, train_size=300))
    configs = [make_config("smoke", regime="joint", epochs=1, train_size=300, seed=1)]
    state = sweep(configs, "local", workers=1, threads=1, folder=root / "jobs", store=store, poll_s=0.2,
                  progress=False)
    assert (state["status"] == "done").all(), state.to_dict("records")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os\\nassert not hasattr(os, 'sched_getaffinity')\\n"
        "from mexlib.store import RunStore\\nfrom mexlib.config import make_config\\n"
        f"run = RunStore({str(root / 'runs')!r}, device='cpu', progress=False).find("
        "make_config('smoke', regime='joint', epochs=1, train_size=300))\\n"
        "assert run is not None\\nprint('notebook read', run.path.name)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "in.ipynb")
    papermill.execute_notebook(str(root / "in.ipynb"), str(root / "out.ipynb"), kernel_name="python3",
                               progress_bar=False)
    print("ran without Linux-only calls:", run.path.name, "and", len(configs), "local job and a notebook")
""")


@pytest.mark.timeout(240)
def test_the_study_runs_without_linux_only_calls(tmp_path):
    """Every Python process of the test (this one's child, the sweep's jobs, the notebook's
    kernel) starts without ``os.sched_getaffinity``, as on macOS and Windows."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
           "MEXLIB_BUILD": str(tmp_path / "build"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", STUDY, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=220)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "ran without Linux-only calls" in done.stdout
