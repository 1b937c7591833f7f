"""Headless Chromium (Debian's `chromium`) for looking at pages as a person would, with the network cut off."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# every request that is not a file:// URL goes to a dead local port: a page that needs the network shows it
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--proxy-server=http://127.0.0.1:9",
         "--proxy-bypass-list=<-loopback>", "--no-first-run", "--disable-extensions"]


def need_chromium() -> str:
    """The browser's path; outside CI a missing browser skips the test, in CI it fails it."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it with apt-get")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return CHROMIUM


def _url(page: Path | str) -> str:
    return page if isinstance(page, str) else page.resolve().as_uri()


def screenshot(page: Path | str, png: Path, size: tuple[int, int] = (1300, 1800), wait_ms: int = 0) -> np.ndarray:
    """Render ``page`` (a file, or a file:// URL) and return the screenshot as an RGB array."""
    extra = [f"--virtual-time-budget={wait_ms}"] if wait_ms else []
    subprocess.run([need_chromium(), *FLAGS, *extra, f"--window-size={size[0]},{size[1]}", f"--screenshot={png}",
                    _url(page)], check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(png).convert("RGB"))


def dom(page: Path | str, wait_ms: int = 0) -> str:
    """The DOM of ``page`` (a file, or a file:// URL) after its scripts ran."""
    extra = [f"--virtual-time-budget={wait_ms}"] if wait_ms else []
    return subprocess.run([need_chromium(), *FLAGS, *extra, "--dump-dom", _url(page)], check=True,
                          capture_output=True, text=True, timeout=120).stdout


def not_blank(pixels: np.ndarray) -> bool:
    """More than a background: many distinct colours and real contrast."""
    flat = pixels.reshape(-1, 3)
    return flat.std() > 20 and len(np.unique(flat[:: max(1, len(flat) // 50_000)], axis=0)) > 50
