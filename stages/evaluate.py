"""DVC stage evaluate: fusion model + cache -> reports/test/ (metrics, report, confusion, errors)."""

from emocare.cache import load_cache
from emocare.data.manifest import load_posts
from emocare.evaluate import evaluate_test
from emocare.labels import MODALITIES
from emocare.params import load_params

if __name__ == "__main__":
    params = load_params()
    metrics = evaluate_test("models/fusion/best_model.pt",
                            {m: f"models/{m}_specialist/best_model.pt" for m in MODALITIES},
                            load_cache("cache/embeddings"), load_posts("data/posts.jsonl"), "reports/test",
                            params["evaluate"]["errors"])
    print({k: metrics[k] for k in ("n", "macro_f1", "accuracy")})
