"""DVC stage train_fusion: cached embeddings -> models/fusion/best_model.pt (params: fusion, train)."""

from emocare.cache import load_cache
from emocare.params import load_params
from emocare.train import train_fusion

if __name__ == "__main__":
    params = load_params()
    summary = train_fusion(load_cache("cache/embeddings"), params["fusion"], params["train"],
                           "models/fusion/best_model.pt", report_dir="reports/fusion")
    print({k: summary[k] for k in ("modalities", "best_val_macro_f1", "best_epoch", "wall_time_s")})
