"""`fetch-media`'s settings, apart from the downloader so that the CLI reads their defaults without importing it."""

from __future__ import annotations

from dataclasses import dataclass

USER_AGENT = "emocare-fetch-media/0.1 (research; emotion classification of posts)"


@dataclass
class FetchConfig:
    """Download settings: the one owner of their defaults (the `fetch-media` flags read them here)."""

    concurrency: int = 8
    per_host_rps: float = 4.0
    max_bytes: int = 50 * 1024 * 1024
    retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    user_agent: str = USER_AGENT
    all_gallery: bool = False
