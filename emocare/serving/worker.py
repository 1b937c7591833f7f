"""The service's model in a process of its own.

In one process, the event loop (HTTP parsing, probes, admission, responses) and a model thread
share one interpreter lock: a forward pass holds it between its tensor operations, so under load
a probe or a new request waits behind the model. Here a spawned child process scores the batches
that :class:`emocare.serving.batcher.Batcher` collects, sent over a pipe; the parent keeps the event loop
and the media decoding. The weights are not copied: they are moved to shared memory and the
child maps them (torch's multiprocessing reductions). The child runs at a lower priority
(``nice``), so the short, latency-bound work of the event loop gets a core first whenever it
has some, and the model takes every cycle left.
"""

from __future__ import annotations

import os
import threading

import torch.multiprocessing as mp

from emocare.predict import EmoCare


class ModelProcessExited(RuntimeError):
    """The model process is gone (killed, out of memory): the service cannot score until restarted."""


def _child(model: EmoCare, conn, nice: int) -> None:
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    conn.send("ready")
    while (batch := conn.recv()) is not None:
        try:
            conn.send(model.score(batch))
        except Exception as e:  # noqa: BLE001 - a failed batch is its callers' answer, not the worker's end
            conn.send(e)


class ModelWorker:
    """``score`` (as :meth:`EmoCare.score`) answered by a child process that owns the model."""

    def __init__(self, model: EmoCare, nice: int = 0, start_timeout_s: float = 300.0):
        model.share_memory()
        ctx = mp.get_context("spawn")  # not fork: the parent's OpenMP threads do not survive a fork
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(model, child, nice), name="emocare-model", daemon=True)
        self._proc.start()
        child.close()
        self._lock = threading.Lock()  # one batch in flight: the pipe carries one request, then its answer
        if not self._conn.poll(start_timeout_s) or self._conn.recv() != "ready":
            self._proc.kill()
            raise RuntimeError(f"the model process did not start within {start_timeout_s} s")

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def score(self, decoded: list[dict]) -> list[dict]:
        with self._lock:
            try:
                self._conn.send(decoded)
                result = self._conn.recv()
            except (EOFError, OSError) as e:
                raise ModelProcessExited(f"the model process has exited (exit code {self._proc.exitcode}); "
                                         "restart the service") from e
        if isinstance(result, Exception):
            raise result
        return result

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the child after the batch in flight (the batcher has scored what was queued)."""
        with self._lock:
            if self._proc.is_alive():
                try:
                    self._conn.send(None)
                except OSError:
                    pass
        self._proc.join(timeout_s)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()
