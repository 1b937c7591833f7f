"""DVC stage train_<modality>: fine-tune one specialist (params: train, <modality>, offline)."""

import sys

from emocare.bundle import specialist_path
from emocare.params import load_params
from emocare.pipeline.crossval import fold_features_path
from emocare.pipeline.specialists import train_specialist

if __name__ == "__main__":
    modality = sys.argv[1]
    metrics = train_specialist(modality, load_params(), "data/posts.jsonl", "data/split.json",
                               specialist_path(modality), f"reports/{modality}",
                               fold_features_path(modality) if modality == "text" else None)
    print({k: metrics.get(k) for k in ("no_data", "best_val_macro_f1", "best_epoch", "wall_time_s")})
