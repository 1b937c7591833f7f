"""DVC stage train_fusion: cached embeddings -> models/fusion/best_model.pt, and the ablation's one fusion model
per modality subset -> models/fusion/subsets/ (params: fusion, train)."""

from emocare.cache import load_cache
from emocare.params import load_params
from emocare.train import train_fusion_models

if __name__ == "__main__":
    params = load_params()
    results = train_fusion_models(load_cache("cache/embeddings"), params["fusion"], params["train"], "models/fusion",
                                  report_dir="reports/fusion")
    for name, r in results.items():
        print(name, r.get("skipped") or {k: r[k] for k in ("modalities", "best_val_macro_f1", "best_epoch",
                                                            "wall_time_s")})
