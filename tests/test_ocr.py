"""Text inside images (``text.ocr``): read by the real engine from captions drawn here, kept per file, and
followed by the text specialist in training and prediction alike."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from conftest import TEXT
from PIL import Image, ImageDraw, ImageFont

from emocare.data import specialist_dataset
from emocare.data.manifest import Post
from emocare.labels import DEFAULT
from emocare.media import ocr
from emocare.media.video import write_video
from emocare.models import build_specialist, load_checkpoint, save_checkpoint


def meme(top: str, bottom: str, size: tuple[int, int] = (640, 400)) -> Image.Image:
    """A photo with a caption at the top and bottom, in white with a black outline, as memes are drawn."""
    img = Image.fromarray(skimage.data.chelsea()).resize(size)
    draw, font = ImageDraw.Draw(img), ImageFont.load_default(size=size[1] // 10)
    for text, y in ((top, size[1] // 8), (bottom, size[1] * 7 // 8)):
        draw.text((size[0] // 2, y), text, font=font, fill="white", stroke_width=3, stroke_fill="black", anchor="mm")
    return img


def squashed(text: str) -> str:
    """Text without its spaces: the engine reads large capitals well but sometimes drops the spaces between them."""
    return text.replace(" ", "")


def test_captions_are_read_from_an_image_and_kept_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "meme.png"
    meme("WHEN THE PATCH DROPS", "RIP MY STREAK").save(path)
    store = tmp_path / "frames"
    read = ocr.media_text(path, "image", store)
    assert squashed(read) == "WHENTHEPATCHDROPSRIPMYSTREAK"
    assert len(list((store / "ocr").rglob("*.json"))) == 1

    def no_engine():
        raise AssertionError("the engine ran again: the stored text was not reused")

    monkeypatch.setattr(ocr, "_engine", no_engine)
    assert ocr.media_text(path, "image", store) == read
    monkeypatch.undo()
    meme("NEW CAPTION HERE", "OTHER WORDS").save(path)  # a changed file is read again
    assert squashed(ocr.media_text(path, "image", store)) == "NEWCAPTIONHEREOTHERWORDS"
    assert squashed(ocr.media_text(Image.open(path), "image")) == "NEWCAPTIONHEREOTHERWORDS"  # the service's

def test_a_video_caption_is_read_from_its_sampled_frames(tmp_path: Path):
    frame = np.asarray(meme("BOSS FIGHT", "SECOND TRY", (320, 240)))
    write_video(tmp_path / "clip.mp4", [frame] * 12)
    assert squashed(ocr.media_text(tmp_path / "clip.mp4", "video")) == "BOSSFIGHTSECONDTRY"
    text_only = Post(id="t", text="no media", label="joy")
    assert ocr.posts_ocr([text_only]) == [""]


def test_without_the_engine_ocr_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    meme("A", "B").save(tmp_path / "m.png")
    ocr._engine.cache_clear()
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # import rapidocr now fails
    with pytest.raises(ocr.OcrUnavailable, match=r"pip install 'emocare\[ocr\]'"):
        ocr.media_text(tmp_path / "m.png", "image")
    ocr._engine.cache_clear()


def test_the_text_specialist_reads_the_caption_after_the_post(tiny_distilbert: Path, tmp_path: Path):
    meme("WHEN THE PATCH DROPS", "RIP MY STREAK").save(tmp_path / "m.png")
    posts = [Post(id="a", text="me rn:", image=str(tmp_path / "m.png"), label="sadness"),
             Post(id="b", text="just text", label="joy")]
    cfg = {"backbone": str(tiny_distilbert), **TEXT, "ocr": True}
    model = build_specialist("text", cfg, DEFAULT)
    ds = specialist_dataset(model, posts, frame_store=str(tmp_path / "frames"))
    caption = ocr.media_text(tmp_path / "m.png", "image", tmp_path / "frames")
    assert squashed(caption) == "WHENTHEPATCHDROPSRIPMYSTREAK"
    assert ds[0] == (f"me rn:\n{caption}", DEFAULT.index("sadness"))
    assert ds[1] == ("just text", DEFAULT.index("joy"))
    save_checkpoint(tmp_path / "text.pt", model, backbone=cfg["backbone"])
    assert load_checkpoint(tmp_path / "text.pt")[0].ocr  # prediction reads captions too
    assert specialist_dataset(build_specialist("text", {**cfg, "ocr": False}, DEFAULT), posts)[0][0] == "me rn:"


def test_predictions_use_and_show_the_caption(trained_bundle: Path, tmp_path: Path):
    from emocare.predict import EmoCare

    meme("WHEN THE PATCH DROPS", "RIP MY STREAK").save(tmp_path / "m.png")
    model = EmoCare.load(trained_bundle, device="cpu")
    model.specialists["text"].ocr = True  # as a bundle trained with text.ocr: true loads
    inputs, failed = model.decode({"text": "me rn:", "image": str(tmp_path / "m.png")})
    caption = inputs["ocr_text"]
    assert not failed and squashed(caption) == "WHENTHEPATCHDROPSRIPMYSTREAK"
    assert inputs["text"] == f"me rn:\n{caption}"
    result = model.predict(text="me rn:", image=str(tmp_path / "m.png"))
    assert result["ocr_text"] == caption and "text" in result["modalities"]
    assert model.predict(text="no media")["ocr_text"] == ""
    model.specialists["text"].ocr = False
    assert "ocr_text" not in model.predict(text="me rn:", image=str(tmp_path / "m.png"))


def test_the_error_gallery_shows_the_caption():
    from emocare.gallery import error_gallery

    probs = {c: 0.2 for c in DEFAULT}
    err = {"id": "p1", "true": "joy", "predicted": "anger", "probability": 0.2, "probabilities": probs,
           "modalities": "text+image", "text": "me rn:", "image": None, "video": None,
           "ocr_text": "WHEN <THE> PATCH DROPS"}
    page = error_gallery([err], 10, DEFAULT)
    assert 'class="ocr"' in page and "WHEN &lt;THE&gt; PATCH DROPS" in page
    assert 'class="ocr"' not in error_gallery([{**err, "ocr_text": ""}], 10, DEFAULT)
