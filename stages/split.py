"""DVC stage split: data/posts.jsonl -> data/split.json and reports/data/stats.{json,md}, whose ``evaluation`` says
whether the run will be evaluated on the held-out test split or by cross-validation (emocare.pipeline.crossval)."""

import sys

from emocare.data.manifest import load_posts
from emocare.data.split import SPLITS, TooFewLabels, check_label_counts, dataset_stats, stats_markdown, stratified_split
from emocare.io import write_json, write_text
from emocare.labels import LabelSet
from emocare.params import load_params
from emocare.pipeline.crossval import evaluation_plan

if __name__ == "__main__":
    params = load_params()
    p, classes = params["split"], LabelSet.from_params(params)
    posts = load_posts("data/posts.jsonl")
    try:  # before split.json is written: no later stage runs, the working models stay
        check_label_counts(posts, classes, p["min_labels"], p["min_per_class"])
    except TooFewLabels as e:
        sys.exit(f"split: {e}")
    assignment = stratified_split(posts, {s: p[s] for s in SPLITS}, p["seed"])
    write_json("data/split.json", {s: [x.id for x in posts if assignment.get(x.id) == s] for s in SPLITS})
    stats = dataset_stats(posts, assignment, classes)
    stats["evaluation"] = evaluation_plan(stats["total"], p)  # cross-validation only if the specialists are frozen
    write_json("reports/data/stats.json", stats)
    write_text("reports/data/stats.md", stats_markdown(stats, classes))
    print({s: v["count"] for s, v in stats["splits"].items()}, stats["evaluation"]["why"])
