"""DVC stage fusion: on the cached embeddings, train the fusion model and the ablation's one model per modality
subset (models/fusion/, reports/fusion/), then score them and the specialists on the test set (reports/test/,
reports/ablation.*, reports/metrics.json). One interpreter for both halves: most of a fusion experiment's
time was interpreters starting and importing torch."""

from emocare.bundle import training_record
from emocare.cache import load_cache
from emocare.data.manifest import load_posts
from emocare.io import write_json
from emocare.labels import LabelSet
from emocare.params import load_params
from emocare.pipeline.evaluate import evaluate_test, headline_metrics, run_ablation, write_ablation
from emocare.pipeline.fusion_training import train_fusion_models

if __name__ == "__main__":
    params, cache, posts = load_params(), load_cache("cache/embeddings"), load_posts("data/posts.jsonl")
    trained_on = training_record(posts, cache, params["data"]["manifest"], "data/posts.jsonl")
    results = train_fusion_models(cache, params["fusion"], params["train"], "reports/fusion",
                                  LabelSet.from_params(params), training_data=trained_on)
    for name, r in results.items():
        print(name, r.get("skipped") or {k: r[k] for k in ("modalities", "best_val_macro_f1", "best_epoch")})
    test = evaluate_test(cache, posts, "reports/test", params["evaluate"]["errors"],
                         frame_store=params.get("frame_store"))
    rows = run_ablation(cache)
    write_ablation(rows, "reports")
    metrics = headline_metrics(test, rows)
    write_json("reports/metrics.json", metrics)
    print(metrics["test"])
