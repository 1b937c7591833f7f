"""Calibration and the trends' shares on real emotion-labelled text. Prints JSON.

MELD's seven classes (``../shared/data/meld``) go through `emocare import csv` and `dvc repro` as in
``own_labels.py``, with a larger test split (``--test-share``) so that shifted "months" can be drawn from it.
Then, from the pipeline's own cache and fusion model:

- test ECE (top label, 15 bins) and NLL for each calibration (:data:`emocare.calibration.KINDS`), fitted on
  validation;
- test ECE's floor: what perfectly calibrated probabilities with the same confidences would read on this many
  test posts (:func:`emocare.calibration.ece_floor`);
- ``--months`` months for each size in ``--month-posts`` (posts per month, comma-separated), test posts
  drawn with a class mix unlike the training mix (each class's training share times exp(N(0, ``--shift``)),
  renormalised), and for every calibration and
  quantifier the mean absolute error of the estimated shares against the month's true shares;
- end to end, as a user runs it: the first month as a manifest dated into one week, `emocare predict` and
  `emocare trends --quantifier Q` for each quantifier, the error of ``trends.csv``'s shares, with the bundle's
  calibration ``--calibration`` (``fusion.calibration``).

``--workdir DIR`` keeps the project copy; run again with the same DIR, only what changed is re-run (a new
``--calibration`` re-runs the fusion stage and after, seconds).

    python benchmarks/calibration.py [--posts 5000] [--months 20] [--month-posts 400,1000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from fusion_experiment import copy_repository, sh
from own_labels import MELD, SEVEN, sample_meld

WEEK = 1718236800  # 2024-06-13: the month's posts, all in one week


def month_rows(labels: np.ndarray, prior: np.ndarray, n: int, shift: float, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """Test rows drawn (with replacement) for a month whose mix is ``prior`` shifted; returns (rows, true mix)."""
    mix = prior * np.exp(rng.normal(0, shift, len(prior)))
    mix /= mix.sum()
    counts = rng.multinomial(n, mix)
    rows = np.concatenate([rng.choice(np.flatnonzero(labels == k), c) for k, c in enumerate(counts) if c])
    return rows, counts / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=5000)
    ap.add_argument("--test-share", type=float, default=0.3)
    ap.add_argument("--months", type=int, default=20)
    ap.add_argument("--month-posts", default="400,1000", help="posts per month, comma-separated sizes")
    ap.add_argument("--shift", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibration", help="fusion.calibration of the pipeline run (default: params.yaml's)")
    ap.add_argument("--workdir", type=Path, help="keep the project copy here, and reuse it when it exists")
    a = ap.parse_args()
    from emocare.cache import load_cache
    from emocare.calibration import KINDS, apply, ece, ece_floor, fit_calibration, nll, softmax
    from emocare.models.fusion import load_fusion
    from emocare.quantify import METHODS, estimate, validation_stats
    from emocare.scoring import cached_fusion_logits

    with contextlib.ExitStack() as stack:
        repo = a.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if not (repo / "meld" / "manifest.jsonl").is_file():
            repo.mkdir(parents=True, exist_ok=True)
            copy_repository(repo)
            (repo / "meld").mkdir()
            sample_meld(repo / "meld" / "meld.csv", a.posts, a.seed)
            sh(repo, sys.executable, "-m", "emocare.cli", "import", "csv", "meld/meld.csv", "--text-col", "text",
               "--label-col", "emotion", "--labels", ",".join(SEVEN), "-o", "meld/manifest.jsonl")
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["labels"] = SEVEN
        params["data"].update(manifest="meld/manifest.jsonl", root="meld")
        params["split"].update(train=round(0.9 - a.test_share, 4), val=0.1, test=a.test_share)
        if a.calibration:
            params["fusion"]["calibration"] = a.calibration
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        wall, _ = sh(repo, sys.executable, "-m", "dvc", "repro")
        shipped = json.loads((repo / "reports" / "test" / "summary.json").read_text())["calibration"]

        cache = load_cache(repo / "cache" / "embeddings")
        model, _ = load_fusion(repo / "models" / "fusion" / "best_model.pt")
        val, test = cache.rows_with("val", model.modalities), cache.rows_with("test", model.modalities)
        raw = {s: cached_fusion_logits(model, cache, r, calibrated=False) for s, r in (("val", val), ("test", test))}
        y_val, y_test = cache.labels[val], cache.labels[test]
        k = len(SEVEN)
        prior = np.bincount(cache.labels[cache.rows("train")], minlength=k) / len(cache.rows("train"))
        out: dict = {"posts": a.posts, "dvc_repro_s": round(wall, 1), "test_posts": int(len(test)),
                     "pipeline_calibration": shipped, "calibrations": {}}
        probs = {}
        for kind in KINDS:
            fitted = fit_calibration(raw["val"], y_val, kind)
            p_val, p_test = softmax(apply(raw["val"], fitted)), softmax(apply(raw["test"], fitted))
            probs[kind] = (p_test, validation_stats(p_val, y_val))
            out["calibrations"][kind] = {"test_ece": round(ece(p_test, y_test), 4),
                                         "test_ece_floor": round(ece_floor(p_test), 4),
                                         "test_nll": round(nll(p_test, y_test), 4),
                                         "test_accuracy": round(float((p_test.argmax(1) == y_test).mean()), 4)}
        rng = np.random.default_rng(a.seed)
        sizes = [int(n) for n in a.month_posts.split(",")]
        months = {n: [month_rows(y_test, prior, n, a.shift, rng) for _ in range(a.months)] for n in sizes}
        out["month_shift_from_training_mix"] = {
            n: round(float(np.mean([np.abs(m - prior).mean() for _, m in ms])), 4) for n, ms in months.items()}
        for kind, (p_test, stats) in probs.items():
            out["calibrations"][kind]["share_mae"] = {n: {
                method: round(float(np.mean([np.abs(estimate(p_test[r], method, stats) - mix).mean()
                                             for r, mix in ms])), 4) for method in METHODS} for n, ms in months.items()}

        # end to end: the first month through `emocare predict` and `emocare trends`
        rows, mix = months[sizes[0]][0]
        by_id = {json.loads(x)["id"]: json.loads(x) for x in (repo / "data" / "posts.jsonl").read_text().splitlines()}
        with open(repo / "month.jsonl", "w", encoding="utf-8") as f:
            for i, r in enumerate(rows):
                post = by_id[cache.ids[test[r]]]
                f.write(json.dumps({"id": f"{post['id']}-{i}", "text": post["text"], "label": post["label"],
                                    "created_utc": WEEK + i}) + "\n")
        sh(repo, sys.executable, "-m", "emocare.cli", "predict", "--manifest", "month.jsonl", "-o", "month.pred.jsonl")
        out["end_to_end"] = {"true_shares": dict(zip(SEVEN, np.round(mix, 4).tolist(), strict=True))}
        for method in METHODS:
            sh(repo, sys.executable, "-m", "emocare.cli", "trends", "month.pred.jsonl", "-o", f"trends-{method}",
               "--quantifier", method)
            table = [x.split(",") for x in (repo / f"trends-{method}" / "trends.csv").read_text().splitlines()[1:]]
            shares = {row[2]: float(row[4]) for row in table}
            out["end_to_end"][method] = {
                "share_mae": round(float(np.mean([abs(shares[c] - m) for c, m in zip(SEVEN, mix, strict=True)])), 4),
                "shares": shares}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    if not MELD.is_dir():
        sys.exit(f"MELD not found at {MELD} (../shared beside the repository)")
    main()
