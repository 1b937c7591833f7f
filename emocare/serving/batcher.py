"""Dynamic micro-batching for the service: one model-worker thread, requests from the event loop.

Like TorchServe's ``batch_size`` / ``max_batch_delay``: the worker takes the first waiting post,
then whatever else arrives within ``max_wait_s`` of it, up to ``max_batch`` posts, and scores
them in one call. Given ``arriving`` (how many posts the caller has admitted but not yet
submitted: requests still being read or decoded), it waits only while some are on their way, so
a batch of everything that is coming goes at once, and a lone post is never held back. Each
caller awaits its own future, so every answer is its own request's. A caller that stopped waiting
(timed out) is skipped if the worker has not reached it yet.
``score`` may run the model in this thread or hand the batch to a model process
(:class:`emocare.serving.worker.ModelWorker`, as the service does).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_STOP = object()
POLL_S = 0.001  # how often the worker looks again while posts are on their way


@dataclass
class _Item:
    inputs: dict
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _resolve(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if future.done():  # the caller timed out and went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """Queue posts from any event loop; a worker thread scores them in batches with ``score``."""

    def __init__(self, score: Callable[[list[dict]], list[dict]], max_batch: int = 32, max_wait_s: float = 0.005,
                 on_batch: Callable[[int], None] | None = None, arriving: Callable[[], int] | None = None):
        self.score, self.max_batch, self.max_wait_s = score, max_batch, max_wait_s
        self.on_batch = on_batch or (lambda n: None)
        self.arriving = arriving
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="model-worker", daemon=True)
        self._thread.start()

    def submit(self, inputs: dict) -> asyncio.Future:
        """A future for ``inputs``'s result; call from the event loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Item(inputs, future, loop))
        return future

    def close(self) -> None:
        """Score everything already queued, then stop the worker."""
        self._queue.put(_STOP)
        self._thread.join()

    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = self._queue.get(timeout=left if self.arriving is None else min(left, POLL_S))
            except queue.Empty:
                if self.arriving is not None and self.arriving() > 0:
                    continue  # posts are on their way (being read or decoded): worth waiting for
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._collect(first)
            live = [it for it in batch if not it.future.done()]
            if not live:
                continue
            self.on_batch(len(live))
            try:
                results = self.score([it.inputs for it in live])
            except Exception as e:  # noqa: BLE001 - a model failure is every caller's answer, not the worker's end
                for it in live:
                    it.loop.call_soon_threadsafe(_resolve, it.future, None, e)
                continue
            for it, result in zip(live, results, strict=True):
                it.loop.call_soon_threadsafe(_resolve, it.future, result)
        while True:  # after the stop marker: score what was queued before it
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and not item.future.done():
                result = self.score([item.inputs])[0]
                item.loop.call_soon_threadsafe(_resolve, item.future, result)
