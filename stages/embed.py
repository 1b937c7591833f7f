"""DVC stage embed_<modality>: best specialist -> cache/embeddings/<modality>.h5 (params: embed)."""

import sys

from emocare.bundle import specialist_path
from emocare.data.manifest import load_posts
from emocare.data.split import read_split
from emocare.params import load_params
from emocare.pipeline.embed import embed_modality

if __name__ == "__main__":
    modality, params = sys.argv[1], load_params()
    p = params["embed"]
    print(embed_modality(modality, specialist_path(modality), load_posts("data/posts.jsonl"),
                         read_split("data/split.json"), f"cache/embeddings/{modality}.h5", p["batch_size"],
                         p["num_workers"], params["train"]["device"], params.get("frame_store"),
                         params.get("cpu_path", "auto")))
