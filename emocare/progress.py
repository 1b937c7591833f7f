"""Progress bars that suit where they are shown: live on a terminal, a line every few seconds in a log.

Without a terminal (nohup, a log file, CI), tqdm's ``\\r`` updates would write tens of bytes per item
into the log; :func:`progress_bar` writes each refresh on a line of its own, at most every ``LOG_EVERY_S``.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_EVERY_S = 5.0


class _LogLines:
    """A tqdm output for a log file or a pipe: each refresh on a line of its own, not overwritten with ``\\r``."""

    def write(self, s: str) -> None:
        s = s.strip("\r\n ")
        if s:
            sys.stderr.write(s + "\n")

    def flush(self) -> None:
        sys.stderr.flush()


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar on stderr (``kwargs`` are tqdm's): live on a terminal, else a line every ``LOG_EVERY_S``."""
    if not sys.stderr.isatty():
        kwargs = {**kwargs, "file": _LogLines(), "mininterval": LOG_EVERY_S, "maxinterval": LOG_EVERY_S}
    return tqdm(iterable, **kwargs)
