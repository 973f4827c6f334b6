"""``mexlib``: the package's one command; ``python -m mexlib`` is its twin.

    mexlib reproduce --profile smoke         run the study's notebooks (make reproduce)
    mexlib report                            the executed notebooks as a static site (make report)
    mexlib sweep status --grid regime=...    a study's grid as jobs: status, run, clean
    mexlib store ls --where regime=joint     what the run store holds; show KEY; gc
    mexlib kernel-check --arch resnet-cpu    this machine's kernels against a float64 reference

Each command is the module of the same name (``python -m mexlib.sweep ...`` works as before); a
command's own ``--help`` says what it takes.
"""

from __future__ import annotations

import importlib
import sys

#: Each command: the module whose ``main(argv)`` runs it, and what it does.
COMMANDS = {
    "reproduce": ("mexlib.reproduce", "run the study's notebooks, regenerating figures/ (make reproduce)"),
    "report": ("mexlib.report", "the executed notebooks of the last reproduce as a static site (make report)"),
    "sweep": ("mexlib.sweep", "a study's grid as jobs into the run store: status, run, clean"),
    "store": ("mexlib.catalogue", "what the run store holds: ls (a table), show KEY, gc (what can go)"),
    "kernel-check": ("mexlib.kernel_check", "check this machine's training kernels against float64"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return ("usage: mexlib COMMAND [ARGUMENTS]   (or: python -m mexlib COMMAND ...)\n\ncommands:\n"
            + "\n".join(lines) + "\n\n`mexlib COMMAND --help` says what a command takes.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{usage()}\n\nmexlib: error: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(rest) or 0
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what stops with it has stopped; no traceback
        print(f"[mexlib] {name} stopped", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "main"]
