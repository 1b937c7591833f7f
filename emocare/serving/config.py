"""The service's settings, apart from the app so that the CLI reads their defaults without importing FastAPI."""

from __future__ import annotations

import os
from dataclasses import dataclass

from emocare.data.manifest import MAX_TEXT_CHARS
from emocare.media.image import DEFAULT_MAX_PIXELS


@dataclass
class ServeConfig:
    """Service limits: the one owner of their defaults (the `emocare serve` flags read them here).

    ``max_text_chars`` caps a post's text (characters, as JSON or as a multipart field alike; longer is 413):
    by default the manifest's limit, beyond which validation quarantines a post (a Reddit title and body);
    ``max_pixels`` caps an image's pixels (validation's limit: larger is 413). ``body_timeout_s`` is how long a
    request's body may take to arrive (408 after): it is read before the request takes a place in the queue.
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_text_chars: int = MAX_TEXT_CHARS
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch: int = 32
    max_wait_ms: float = 20.0  # waited only while admitted posts are still being read or decoded
    max_queue: int = 256
    timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    access_log: bool = False
    worker_nice: int = 10  # the model process yields the CPU to the event loop (probes, admission, I/O)
    decode_threads: int = max(1, min(4, len(os.sched_getaffinity(0))))
