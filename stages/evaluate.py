"""DVC stage evaluate: test-set evaluation and the modality ablation -> reports/test/, reports/ablation.*,
reports/metrics.json (one interpreter for both: they load the same cache and models)."""

from emocare.cache import load_cache
from emocare.data.manifest import load_posts
from emocare.evaluate import evaluate_test, headline_metrics, run_ablation, write_ablation
from emocare.io import write_json
from emocare.labels import MODALITIES
from emocare.params import load_params

if __name__ == "__main__":
    params, cache = load_params(), load_cache("cache/embeddings")
    test = evaluate_test("models/fusion/best_model.pt", {m: f"models/{m}_specialist/best_model.pt" for m in MODALITIES},
                         cache, load_posts("data/posts.jsonl"), "reports/test", params["evaluate"]["errors"])
    rows = run_ablation("models/fusion", cache)
    write_ablation(rows, "reports")
    metrics = headline_metrics(test, rows)
    write_json("reports/metrics.json", metrics)
    print(metrics["test"])
