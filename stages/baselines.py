"""DVC stage baselines: the majority class, TF-IDF + logistic regression and frozen-backbone logistic regression,
on the same test split or folds as EmoCare (emocare.pipeline.crossval) -> reports/baselines.json."""

import numpy as np

from emocare.cache import load_cache
from emocare.data.manifest import load_posts
from emocare.data.split import read_split
from emocare.io import read_json, write_json
from emocare.labels import MODALITIES, LabelSet, label_index
from emocare.params import load_params
from emocare.pipeline.baselines import frozen_features, score_baselines
from emocare.pipeline.crossval import evaluation_plan, fold_splits, label_free, post_folds

if __name__ == "__main__":
    params = load_params()
    classes = LabelSet.from_params(params)
    posts, split = load_posts("data/posts.jsonl"), read_split("data/split.json")
    labels = np.array([label_index(p.label, classes.names) for p in posts])
    infos = {m: read_json(f"reports/{m}/info.json") for m in MODALITIES}
    plan = evaluation_plan(int((labels >= 0).sum()), params["split"], infos)
    if plan["kind"] == "cv":
        fold = post_folds(posts, labels, params["split"])
        runs = [fold_splits(fold, f) for f in range(int(fold.max()) + 1)]
    else:
        runs = [np.array([split.get(p.id, "") for p in posts])]
    if label_free(infos["text"]) and not infos["text"].get("no_data"):
        cache = load_cache("cache/embeddings", ["text"])
        assert cache.ids == [p.id for p in posts], "cache/embeddings/text.h5 does not follow data/posts.jsonl"
        emb, source = cache.emb["text"].numpy(), "the cached text embeddings (frozen text specialist)"
    else:
        emb = frozen_features(posts, params["text"], classes, params.get("offline", True), params["train"]["device"])
        source = f"{params['text']['backbone']}'s pooled features before any training (computed here)"
    result = score_baselines([p.text for p in posts], emb, labels, runs, len(classes))
    write_json("reports/baselines.json", {"evaluation": plan, "frozen_features": source, "baselines": result})
    print({k: (v["macro_f1"], v["macro_f1_interval"]) for k, v in result.items()})
