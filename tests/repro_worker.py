"""Run by test_reproducibility.py in a fresh interpreter (so CPU-kernel settings in the environment take effect):
train the tiny image specialist with the pipeline's function and print its metrics and checkpoint hash as JSON."""

import json
import sys
from pathlib import Path

from emocare.io import file_sha256
from emocare.pipeline.specialists import train_specialist

if __name__ == "__main__":
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    params = json.loads((root / "params.json").read_text())
    metrics = train_specialist("image", params, root / "posts.jsonl", root / "split.json", out / "best_model.pt",
                               out / "reports")
    print(json.dumps({"best_val_macro_f1": metrics["best_val_macro_f1"], "best_val_loss": metrics["best_val_loss"],
                      "sha256": file_sha256(out / "best_model.pt")}))
