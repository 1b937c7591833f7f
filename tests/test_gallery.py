"""The error gallery opened in headless Chromium with the network cut off: cards, thumbnails, filters."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from browser import dom, not_blank, screenshot
from PIL import Image

from emocare.gallery import THUMB_PX, error_gallery
from emocare.labels import DEFAULT


def errors_from_demo(demo_dir: Path, n: int = 9) -> list[dict]:
    recs = [json.loads(x) for x in (demo_dir / "manifest.jsonl").read_text().splitlines()]
    picks = [r for r in recs if "image" in r][:4] + [r for r in recs if "video" in r][:3] + \
        [r for r in recs if "image" not in r and "video" not in r][:2]
    out = []
    for i, r in enumerate(picks[:n]):
        true, pred = DEFAULT.names[i % 5], DEFAULT.names[(i + 2) % 5]
        probs = dict.fromkeys(DEFAULT, 0.05)
        probs[pred] = 0.8
        out.append({"id": r["id"], "true": true, "predicted": pred, "probability": 0.8, "probabilities": probs,
                    "text": r["text"], "image": str(demo_dir / r["image"]) if "image" in r else None,
                    "video": str(demo_dir / r["video"]) if "video" in r else None,
                    "modalities": "text+image" if "image" in r else "text+video" if "video" in r else "text"})
    return out


@pytest.mark.browser
def test_gallery_in_a_browser(demo_dir: Path, tmp_path: Path):
    errors = errors_from_demo(demo_dir)
    page = tmp_path / "errors.html"
    page.write_text(error_gallery(errors, total_test=120, classes=DEFAULT))
    source = page.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', source), "the page must not load anything from the network"
    thumbs = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', source)
    assert len(thumbs) == 7  # 4 images and 3 video strips; the 2 text-only posts have none
    for t in thumbs:
        w, h = Image.open(io.BytesIO(base64.b64decode(t))).size
        assert max(w, h) <= THUMB_PX

    html = dom(page)
    assert html.count('class="card"') == 9 and '<span id="shown">9</span>' in html
    filtered = dom(page.resolve().as_uri() + "?true=anger")  # filters can be set from the URL
    visible = [c for c in re.findall(r'<div class="card"[^>]*>', filtered) if "display: none" not in c]
    expected = sum(e["true"] == "anger" for e in errors)
    assert len(visible) == expected and f'<span id="shown">{expected}</span>' in filtered
    both = dom(page.resolve().as_uri() + "?pred=joy&combo=text%2Bvideo")
    assert f'<span id="shown">{sum(e["predicted"] == "joy" and e["modalities"] == "text+video" for e in errors)}' \
           "</span>" in both

    pixels = screenshot(page, tmp_path / "shot.png", size=(1000, 900))
    assert not_blank(pixels)
