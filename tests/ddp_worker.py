"""Run under torchrun by test_distributed.py: train or embed with the pipeline's functions; each rank
records what it decided (test instrumentation only)."""

import json
import sys
from pathlib import Path

from emocare.data.manifest import load_posts
from emocare.data.split import read_split
from emocare.distributed import rank_world
from emocare.pipeline.embed import embed_modality
from emocare.pipeline.specialists import train_specialist

if __name__ == "__main__":
    mode, root = sys.argv[1], Path(sys.argv[2])
    params = json.loads((root / "params.json").read_text())
    if mode == "train":
        result = train_specialist("image", params, root / "posts.jsonl", root / "split.json",
                                  root / "ddp" / "best_model.pt", root / "ddp-reports")
    else:
        result = embed_modality("image", root / "single" / "best_model.pt", load_posts(root / "posts.jsonl"),
                                read_split(root / "split.json"), root / "ddp-image.h5", batch_size=8, device="cpu")
    rank, world = rank_world()
    (root / f"{mode}-rank{rank}.json").write_text(json.dumps({"world": world, **result}, default=str))
