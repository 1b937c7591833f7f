"""Run a stage script in one process, or under torchrun when ``launch.nproc`` > 1.

    python -m emocare.launch --nproc 2 [--torchrun-args "--nnodes=2 --rdzv-backend=c10d ..."] SCRIPT ARGS...

With ``--nproc 1`` and no torchrun arguments the script simply runs in this Python (a single
process, exactly as without the launcher). Otherwise it is started with
``python -m torch.distributed.run`` (torchrun); ``--standalone`` is added unless rendezvous
arguments are given.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys


def command(nproc: int, torchrun_args: str, script: str, args: list[str]) -> list[str]:
    """The argv that runs ``script`` for the given launch settings."""
    extra = shlex.split(torchrun_args or "")
    if nproc <= 1 and not extra:
        return [sys.executable, script, *args]
    standalone = [] if any(a.startswith(("--rdzv", "--master", "--nnodes")) for a in extra) else ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *standalone, f"--nproc_per_node={nproc}", *extra,
            script, *args]


def without_options(argv: list[str], *names: str) -> list[str]:
    """``argv`` less the options ``names`` and their values (``--name V`` or ``--name=V``).

    A command re-run under torchrun drops its launch options: torchrun's own parser would read
    ``--nproc`` as an ambiguous abbreviation of ``--nproc-per-node`` even after the script name.
    """
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not arg.startswith(tuple(f"{n}=" for n in names)):
            out.append(arg)
    return out


def run(nproc: int, torchrun_args: str, script: str, args: list[str]) -> None:
    """Run ``script`` with the given launch settings as a child process; raise if it fails."""
    import subprocess

    code = subprocess.call(command(nproc, torchrun_args, script, args))
    if code != 0:
        raise RuntimeError(f"{script} under torchrun (--nproc {nproc}) exited with code {code}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m emocare.launch", description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=1, help="processes per node")
    ap.add_argument("--torchrun-args", default="", help="extra torchrun arguments (multi-node rendezvous)")
    ap.add_argument("script")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    argv = command(a.nproc, a.torchrun_args, a.script, a.args)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
