"""Install packages into the running interpreter's environment, with uv where it can be had.

    .venv/bin/python tools/install.py [--installer uv|pip] -e '.[test]'

``make venv`` calls this. uv downloads, unpacks and byte-compiles in parallel: on the
development machine (2 cores) a fresh environment with PyTorch took 38 s with uv against 88 s
with pip, measured one after the other on 2026-12-04 (pip's part of the install is what a fresh
CI machine spends most of its setup on). uv is itself a PyPI package: it is installed into the
environment with pip first. Where it cannot be installed or fails, the install falls back to
pip, saying why, so a machine with only pip still works.

uv does not read pip's configuration, so what pip would use (its index, extra indexes, local
wheel folders, constraints, certificate bundle and timeout, from pip.conf files and PIP_*
variables, in pip's order of precedence) is read with pip's own option parser and passed on. Packages are byte-compiled as pip
does (``--compile-bytecode``): where PYTHONDONTWRITEBYTECODE is set, a module not compiled at
install time is compiled again by every process that imports it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

INSTALLERS = ("uv", "pip")


def pip_settings() -> dict:
    """What ``pip install`` would use here, as pip itself resolves it from its configuration
    files (site-wide, user, the environment's) and its PIP_* variables, in its own order of
    precedence: its ``install`` command's parsed options."""
    from pip._internal.commands import create_command  # pip's parser: the same precedence as pip

    options, _ = create_command("install").parse_args([])
    return dict(index_url=options.index_url, extra_index_urls=list(options.extra_index_urls),
                find_links=list(options.find_links), constraints=list(options.constraints),
                no_index=bool(options.no_index), cert=options.cert, timeout=options.timeout)


def uv_command(settings: dict, python: str = sys.executable,
               uv: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``uv pip install`` command (packages to be appended) and its environment, installing
    into ``python``'s environment with pip's ``settings``; ``uv`` defaults to the one pip
    installed beside this interpreter."""
    uv = uv or os.path.join(os.path.dirname(sys.executable), "uv")
    command = [uv, "pip", "install", "--quiet", "--python", python, "--compile-bytecode"]
    if settings["no_index"]:
        command.append("--no-index")
    elif settings["index_url"]:
        command += ["--index-url", settings["index_url"]]
    for option, key in (("--extra-index-url", "extra_index_urls"), ("--find-links", "find_links"),
                        ("--constraint", "constraints")):
        for value in settings[key]:
            command += [option, value]
    env = dict(os.environ)
    if settings["cert"]:
        env.setdefault("SSL_CERT_FILE", settings["cert"])
    if settings["timeout"]:
        env.setdefault("UV_HTTP_TIMEOUT", str(int(settings["timeout"])))
    return command, env


def install_with_pip(packages: list[str]) -> int:
    return subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", *packages]).returncode


def install_with_uv(packages: list[str]) -> int:
    got = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          "uv"], capture_output=True, text=True)
    if got.returncode:
        print(f"[install] uv could not be installed with pip ({_last_line(got.stderr)}): installing with pip",
              file=sys.stderr)
        return install_with_pip(packages)
    try:
        command, env = uv_command(pip_settings())
    except Exception as error:  # pip's internals moved: do as pip would, with pip
        print(f"[install] pip's settings could not be read for uv ({error!r}): installing with pip", file=sys.stderr)
        return install_with_pip(packages)
    done = subprocess.run(command + packages, env=env)
    if done.returncode:
        print(f"[install] uv failed (exit status {done.returncode}): installing with pip", file=sys.stderr)
        return install_with_pip(packages)
    return 0


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--installer", default=os.environ.get("INSTALLER") or "uv",
                        help=f"one of {', '.join(INSTALLERS)} (default uv, falling back to pip)")
    args, packages = parser.parse_known_args(argv)
    if args.installer not in INSTALLERS:
        parser.error(f"unknown installer {args.installer!r}; valid installers: {', '.join(INSTALLERS)}")
    if not packages:
        parser.error("name what to install, as for pip install (e.g. -e '.[test]')")
    return (install_with_uv if args.installer == "uv" else install_with_pip)(packages)


if __name__ == "__main__":
    sys.exit(main())
