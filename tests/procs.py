"""Processes as /proc sees them, for the tests that kill -9 a parent and look for what outlived it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text() if d.name.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(d.name))
    return found


def running(pid: int) -> bool:
    """``pid`` exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def kill_and_wait(proc: subprocess.Popen, pids: list[int], within_s: float) -> list[int]:
    """``kill -9`` ``proc``; the ``pids`` still running ``within_s`` seconds later."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + within_s
    while time.time() < deadline and any(map(running, pids)):
        time.sleep(0.05)
    return [p for p in pids if running(p)]
