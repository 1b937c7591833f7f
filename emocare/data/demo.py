"""A deterministic synthetic demo set shaped like the original study's Reddit data.

Recipe (all draws from one ``numpy`` generator seeded with ``seed``):

* **Labels** follow the original class mix exactly (largest-remainder rounding): Neutral/Other
  31.6%, Joy 29.2%, Anger 26.6%, Surprise 7.3%, Sadness 5.2%.
* **Modalities** follow the original mix independently of the label: text+image 75.5%,
  text+video 19.8%, text only 4.7%.
* **Content class.** Each post's content is drawn for a *content class*, equal to its label
  except for ``LABEL_NOISE`` (5%) of posts, whose content is drawn for another class; that is
  the label noise.
* **Text.** Text-only posts always carry an emotion sentence (game-community phrases with
  emotion words). Posts with media carry one with probability ``P_INFORMATIVE_TEXT`` (0.35);
  otherwise an ambiguous caption shared by all classes ("me rn:", "when the update drops").
  Text alone therefore reaches roughly 0.5 macro-F1.
* **Images** (96 px PNG): a background colour per class (hue jittered), a drawn face whose
  mouth and brows show the emotion (smile, frown with a tear, angry brows, open mouth, flat
  mouth) and random clutter shapes.
* **Videos** (96 px, 16-24 frames MP4): a class-coloured background and a ball whose motion
  is the emotion (bounces for joy, shakes for anger, grows for surprise, sinks for sadness,
  drifts slowly for neutral).

* **Time.** ``created_utc`` spreads the posts evenly over 26 weeks from 2024-01-01, except that
  every third anger post is dated in ``UPDATE_WEEK`` (a game update the community disliked), so
  that `emocare trends` has a spike to find. Timestamps are metadata: no model reads them.

Media are always informative about the content class, so all modalities together can exceed
0.8 macro-F1 while text alone cannot.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from emocare.io import atomic_path, write_jsonl
from emocare.labels import DEFAULT_LABELS as LABELS  # the demo keeps the five default classes
from emocare.media.video import write_video
from emocare.progress import progress_bar

CLASS_MIX = {"neutral": 0.316, "joy": 0.292, "anger": 0.266, "surprise": 0.073, "sadness": 0.052}
MODALITY_MIX = {"text+image": 0.755, "text+video": 0.198, "text": 0.047}
LABEL_NOISE = 0.05
P_INFORMATIVE_TEXT = 0.35
IMAGE_SIZE = 96
VIDEO_SIZE = 96
START_UTC, DAY = 1_704_067_200, 86_400  # 2024-01-01T00:00:00Z
SPAN_DAYS, UPDATE_WEEK = 182, 12

BRAWLERS = ["Shelly", "Colt", "Spike", "Crow", "Leon", "Mortis", "El Primo", "Poco", "Bibi", "Edgar"]
MODES = ["Gem Grab", "Brawl Ball", "Showdown", "Heist", "Bounty", "Knockout"]
EMOTION_TEXT = {
    "neutral": ["what's the best build for {b} in {m}?", "patch notes for {m} are out",
                "looking for a club, trophies around 20k", "does {b} counter {b2}?",
                "my {b} gameplay from {m}, any tips?", "map rotation question for {m}"],
    "joy": ["finally unlocked {b}!! so happy", "best day ever, pushed {b} to rank 30",
            "love this game, {m} with friends was awesome", "yesss got a legendary drop, lets go",
            "so proud of my team in {m}, we won!", "this update is amazing, thank you devs"],
    "anger": ["this matchmaking is trash, so mad", "{b} is broken, nerf it already, I'm furious",
              "teammates threw again in {m}, I hate this", "worst balance change ever, angry",
              "lost to {b} spam for the 10th time, ridiculous", "servers lagged and I lost trophies, unacceptable"],
    "surprise": ["no way, {b} just did WHAT?!", "wait what, I got a legendary from a free box??",
                 "didn't expect {m} to come back, wow", "omg did that just happen in {m}?!",
                 "can't believe this shot hit, unreal", "whoa, {b} got a surprise rework"],
    "sadness": ["lost my win streak, feeling down", "my friend quit the game, I miss playing {m} together",
                "dropped 200 trophies with {b}, so sad", "they removed my favourite skin, heartbroken",
                "last day of {m} before it leaves, gonna miss it", "nobody plays {b} anymore :("],
}
AMBIGUOUS = ["me rn:", "when the update drops", "mood", "this is fine", "every single time",
             "ok then", "me after ranked", "pov: you open a box", "{b} mains be like", "how it feels",
             "no comment", "the {m} experience", "tell me why", "literally me", "average lobby"]

# Class hues (OpenCV HSV, 0-179) for image backgrounds and video colours.
HUE = {"neutral": 100, "joy": 25, "anger": 0, "surprise": 140, "sadness": 115}
SAT = {"neutral": 40, "joy": 200, "anger": 210, "surprise": 170, "sadness": 190}


def apportion(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to ``n`` closest to ``n * share`` (largest remainder)."""
    exact = {k: n * v / sum(mix.values()) for k, v in mix.items()}
    counts = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _shuffled(rng: np.random.Generator, counts: dict[str, int]) -> list[str]:
    values = [k for k, c in counts.items() for _ in range(c)]
    return [values[i] for i in rng.permutation(len(values))]


def _text(rng: np.random.Generator, content: str, informative: bool) -> str:
    template = rng.choice(EMOTION_TEXT[content] if informative else AMBIGUOUS)
    b, b2 = rng.choice(BRAWLERS, size=2, replace=False)
    return str(template).format(b=b, b2=b2, m=rng.choice(MODES))


def _colour(rng: np.random.Generator, content: str, value: int = 200) -> tuple[int, int, int]:
    hue = int(HUE[content] + rng.integers(-6, 7)) % 180
    sat = int(np.clip(SAT[content] + rng.integers(-30, 31), 0, 255))
    hsv = np.uint8([[[hue, sat, int(np.clip(value + rng.integers(-30, 31), 0, 255))]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_image(rng: np.random.Generator, content: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """An RGB meme-like picture: class-coloured background, clutter and an emotive face."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = _colour(rng, content)
    for _ in range(rng.integers(2, 6)):  # clutter
        c = tuple(int(x) for x in rng.integers(0, 256, 3))
        p = tuple(int(x) for x in rng.integers(0, size, 2))
        cv2.rectangle(img, p, (p[0] + int(rng.integers(4, 20)), p[1] + int(rng.integers(4, 20))), c, -1)
    cx, cy = (int(x) for x in rng.integers(size * 2 // 5, size * 3 // 5 + 1, 2))
    r = int(rng.integers(size // 5, size // 4 + 1))
    cv2.circle(img, (cx, cy), r, (250, 220, 120), -1)
    eye = max(2, r // 6)
    for sx in (-1, 1):
        cv2.circle(img, (cx + sx * r // 3, cy - r // 4), eye, (30, 30, 30), -1)
    m = r // 2
    black = (30, 30, 30)
    if content == "joy":
        cv2.ellipse(img, (cx, cy + r // 6), (m, m // 2), 0, 0, 180, black, 2)
    elif content == "sadness":
        cv2.ellipse(img, (cx, cy + r // 2), (m, m // 2), 0, 180, 360, black, 2)
        cv2.circle(img, (cx - r // 3, cy), eye, (60, 120, 255), -1)
    elif content == "anger":
        cv2.line(img, (cx - r // 2, cy - r // 2), (cx - r // 6, cy - r // 3), black, 2)
        cv2.line(img, (cx + r // 2, cy - r // 2), (cx + r // 6, cy - r // 3), black, 2)
        cv2.line(img, (cx - m, cy + r // 3), (cx + m, cy + r // 3), black, 3)
    elif content == "surprise":
        cv2.circle(img, (cx, cy + r // 3), max(3, r // 4), black, -1)
    else:
        cv2.line(img, (cx - m // 2, cy + r // 3), (cx + m // 2, cy + r // 3), black, 1)
    return img


def draw_video(rng: np.random.Generator, content: str, size: int = VIDEO_SIZE) -> list[np.ndarray]:
    """RGB frames of a ball whose motion pattern shows the emotion, over a class-coloured ground."""
    n = int(rng.integers(16, 25))
    bg, ball = _colour(rng, content, 150), _colour(rng, content, 250)
    x0, y0 = (float(v) for v in rng.integers(size // 3, 2 * size // 3 + 1, 2))
    phase = float(rng.uniform(0, 2 * np.pi))
    frames = []
    for t in range(n):
        s = t / (n - 1)
        x, y, r = x0, y0, size / 10
        if content == "joy":
            y = y0 - abs(np.sin(phase + 3 * np.pi * s)) * size / 4
        elif content == "anger":
            x = x0 + (size / 8) * (1 if t % 2 else -1)
        elif content == "surprise":
            r = size / 16 + s * size / 4
        elif content == "sadness":
            y = size / 5 + s * size * 0.6
        else:
            x = x0 + np.sin(phase + s) * size / 20
        frame = np.zeros((size, size, 3), np.uint8)
        frame[:] = bg
        cv2.circle(frame, (int(x), int(y)), int(r), ball, -1)
        frames.append(frame)
    return frames


def _created(i: int, posts: int, label: str) -> int:
    """Post ``i``'s Unix time: even spread over ``SPAN_DAYS``, a third of anger posts in ``UPDATE_WEEK``."""
    if label == "anger" and i % 3 == 0:
        return START_UTC + UPDATE_WEEK * 7 * DAY + (i * 7919) % (7 * DAY)
    return START_UTC + i * SPAN_DAYS * DAY // posts


def generate(out_dir: str | Path, posts: int = 1250, seed: int = 7) -> Path:
    """Write ``posts`` synthetic posts (manifest.jsonl + media/) into ``out_dir``; return the manifest."""
    out_dir = Path(out_dir)
    media = out_dir / "media"
    media.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = _shuffled(rng, apportion(posts, CLASS_MIX))
    combos = _shuffled(rng, apportion(posts, MODALITY_MIX))
    records = []
    for i in progress_bar(range(posts), desc="demo posts", unit="post", leave=False):
        label, combo = labels[i], combos[i]
        content = label
        if rng.random() < LABEL_NOISE:
            content = str(rng.choice([c for c in LABELS if c != label]))
        informative = combo == "text" or rng.random() < P_INFORMATIVE_TEXT
        post_id = f"demo{i:05d}"
        rec = {"id": post_id, "text": _text(rng, content, informative), "label": label,
               "subreddit": "Brawlstars", "created_utc": _created(i, posts, label), "author": f"user{i % 97}",
               "synthetic": True}  # what a bundle trained on this set warns about
        if combo == "text+image":
            rec["image"] = f"media/{post_id}.png"
            with atomic_path(media / f"{post_id}.png", suffix=".png") as tmp:
                cv2.imwrite(str(tmp), cv2.cvtColor(draw_image(rng, content), cv2.COLOR_RGB2BGR))
        elif combo == "text+video":
            rec["video"] = f"media/{post_id}.mp4"
            with atomic_path(media / f"{post_id}.mp4", suffix=".mp4") as tmp:
                write_video(tmp, draw_video(rng, content))
        records.append(rec)
    manifest = out_dir / "manifest.jsonl"
    write_jsonl(manifest, records)
    return manifest


def build_if_used(out_dir: str | Path, data_root: str | Path, posts: int, seed: int) -> str:
    """The demo set in ``out_dir`` when ``data_root`` (params.yaml's data.root) is that folder; otherwise only a
    note saying why it is empty, so a ``dvc repro`` on a team's own data does not generate 1,250 posts."""
    out_dir = Path(out_dir)
    if Path(data_root).resolve() == out_dir.resolve():
        return f"wrote {generate(out_dir, posts, seed)}"
    out_dir.mkdir(parents=True, exist_ok=True)
    note = out_dir / "NOT_BUILT.md"
    with atomic_path(note, suffix=".md") as tmp:
        tmp.write_text(f"The demo set is not built: params.yaml's data.root is {data_root}, not {out_dir}.\n"
                       f"Set data.root: {out_dir} (and data.manifest: {out_dir}/manifest.jsonl) to build it.\n",
                       encoding="utf-8")
    return f"skipped the demo set: data.root is {data_root} (wrote {note})"


def summary(manifest: str | Path) -> dict:
    """Class and modality shares of a demo manifest (for checks and the CLI)."""
    with open(manifest, encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    n = len(recs)
    combos = ["text+image" if "image" in r else "text+video" if "video" in r else "text" for r in recs]
    return {"posts": n,
            "classes": {c: sum(r["label"] == c for r in recs) / n for c in LABELS},
            "modalities": {m: combos.count(m) / n for m in MODALITY_MIX}}
