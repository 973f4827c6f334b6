"""Helpers the notebooks call at the top: parameter checking and the run environment.

papermill only warns about a parameter the notebook does not declare and then injects it
anyway, so a typo (``seed=`` for ``seeds=``) would silently run the defaults. Each notebook
therefore calls :func:`check_parameters` right after its parameters cell.
"""

from __future__ import annotations

import ast

INJECTED_MARKER = "# Parameters"


def _assigned_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        else:
            continue
        for target in targets:
            names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def unknown_parameters(history: list[str]) -> tuple[set[str], set[str]]:
    """(unknown, declared) parameter names from the kernel's cell history ``In``.

    papermill runs its injected cell (which starts with ``# Parameters``) right after the cell
    tagged ``parameters``; a name the injected cell assigns that the parameters cell does not
    is unknown.
    """
    for i in range(len(history) - 1, 0, -1):
        if history[i].lstrip().startswith(INJECTED_MARKER):
            declared = _assigned_names(history[i - 1])
            return _assigned_names(history[i]) - declared, declared
    return set(), set()


def check_parameters() -> None:
    """Stop the notebook when papermill injected a parameter its parameters cell lacks."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return
    unknown, declared = unknown_parameters(list(shell.user_ns.get("In", [])))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s): {', '.join(sorted(unknown))}; "
                         f"valid parameters: {', '.join(sorted(declared))}")
