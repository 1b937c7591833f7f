"""How fast a DataLoader can hand the embed stage video posts, by pixel type, without any decoding.

Each item is one video post's 8 frames at 224 px, already in memory (what a warm frame store
gives): float32 after normalisation, as decoding every time ships them, or uint8, as the frame
store ships them, normalised on the device. Workers send batches to the main process through
shared memory, then the batch is copied to the device. Prints posts/s for each type: the ceiling
on embedding throughput that the loader alone sets. Prints JSON.

    python benchmarks/loader_transfer.py [--workers 8] [--batch-size 128] [--posts 2048]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import DataLoader, Dataset

from emocare.runtime import resolve_device


class Frames(Dataset):
    def __init__(self, n: int, dtype: torch.dtype):
        self.n = n
        self.item = torch.randint(0, 256, (8, 3, 224, 224), dtype=torch.uint8)
        if dtype != torch.uint8:
            self.item = self.item.to(dtype).div(255)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.item.clone()


def posts_per_s(ds: Dataset, workers: int, batch_size: int, device: torch.device) -> float:
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0)
    for batch in loader:  # warm-up epoch: workers started
        batch.to(device, non_blocking=True)
    start = time.perf_counter()
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        if batch.dtype == torch.uint8:
            batch = batch.float().div_(255)  # what normalising on the device costs
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(ds) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--posts", type=int, default=2048)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    device = resolve_device(a.device)
    out = {"device": str(device), "workers": a.workers, "batch_size": a.batch_size, "posts": a.posts,
           "item": "8 x 3 x 224 x 224", "posts_per_s": {}}
    for name, dtype in (("float32", torch.float32), ("uint8", torch.uint8)):
        out["posts_per_s"][name] = round(posts_per_s(Frames(a.posts, dtype), a.workers, a.batch_size, device), 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
