"""DVC stage ablation: seven modality subsets, masked and retrained -> reports/ablation.{json,md,csv,png}."""

from emocare.cache import load_cache
from emocare.evaluate import run_ablation, write_ablation
from emocare.params import load_params

if __name__ == "__main__":
    params = load_params()
    rows = run_ablation("models/fusion/best_model.pt", load_cache("cache/embeddings"), params["fusion"],
                        params["train"])
    write_ablation(rows, "reports")
