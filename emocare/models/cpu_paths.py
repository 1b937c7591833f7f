"""How the pretrained encoders run for inference on a CPU: the ``cpu_path`` setting and its runners.

The paths (``benchmarks/tower_speed.py`` times each and checks it against fp32):

- ``fp32``: PyTorch eager in float32, as trained;
- ``onnx``: the same float32 network exported once to ONNX and run by ONNX Runtime (features within
  float rounding of fp32: cosine 1.0000 measured); a vision tower is exported for its input size with constant
  padding (:func:`constant_padding`);
- ``bf16``: PyTorch eager under bfloat16 autocast (oneDNN), the vision tower in channels_last; only
  where the CPU computes bfloat16 natively (``avx512_bf16`` or AMX), elsewhere it is emulated and slow.
  It keeps MiniLM's features (cosine >= 0.9999 to fp32) but not EfficientNet-Lite0's (0.979 at worst on 64
  demo images, below the 0.999 asked; macro-F1 down 0.016 on the demo's images);
- ``openvino_bf16``: the ONNX export compiled by OpenVINO's CPU plugin with bfloat16 inference precision, on the
  same CPUs as ``bf16``: MiniLM's features kept as well (cosine 0.99995) at 1.3 to 1.6 times ``bf16``'s texts/s;
  EfficientNet-Lite0's not (0.991 at worst on the demo's images). So ``auto`` takes the bfloat16 paths for text
  only.

``auto`` (the default) takes, per encoder, the fastest path the measurements kept that this machine
supports: :data:`AUTO_ORDER`. int8 (ONNX Runtime's static quantization) is twice ``onnx``'s speed on a VNNI CPU
but moves EfficientNet-Lite0's features (cosine 0.91) and macro-F1 by more than the 0.005 allowed: measured by the
benchmark, not offered (docs: Speed on a CPU). On a GPU every encoder runs as :func:`emocare.runtime.autocast` says and
the setting does not apply. A runner is used only where no gradient is taken (prediction, embedding, a
frozen tower's features); training runs the modules themselves.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch import nn

from emocare.io import atomic_path

CPU_PATHS = ("fp32", "onnx", "bf16", "openvino_bf16")
FLOAT32_PATHS = {"fp32", "onnx"}  # the same float32 arithmetic in another order: features agree within 1e-4
SETTINGS = ("auto", *CPU_PATHS)
# Fastest first among the paths that hold fp32's features, by benchmarks/tower_speed.py on the 2-core AMD EPYC
# (README: Speed on a CPU)
AUTO_ORDER = {"vision": ("onnx", "fp32"), "text": ("openvino_bf16", "bf16", "onnx", "fp32")}
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # /proc/cpuinfo flags of native bfloat16 arithmetic
EXPORT_VERSION = 2  # in an exported graph's name: bump when the export changes (2: a vision tower's padding constant)


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo); empty where that file is absent."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def onnx_available() -> bool:
    """Whether the exporter's and the runtime's packages (onnx, onnxruntime) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def openvino_available() -> bool:
    """Whether the exporter's package (onnx) and OpenVINO are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "openvino"))


def supported(path: str, flags: frozenset[str] | None = None) -> bool:
    """Whether ``path`` can run here (and, for the bfloat16 paths, runs natively on ``flags``, this CPU's by
    default)."""
    native_bf16 = bool(BF16_FLAGS & (cpu_flags() if flags is None else flags))
    if path == "onnx":
        return onnx_available()
    if path == "bf16":
        return torch.backends.mkldnn.is_available() and native_bf16
    if path == "openvino_bf16":
        return openvino_available() and native_bf16
    return path == "fp32"


def choose_cpu_path(setting: str, encoder: str, device: torch.device,
                    flags: frozenset[str] | None = None) -> str:
    """The path ``encoder`` (``vision`` or ``text``) runs on ``device`` with the ``cpu_path`` ``setting``."""
    if setting not in SETTINGS:
        raise ValueError(f"cpu_path must be one of {', '.join(SETTINGS)}, not {setting!r}")
    if device.type != "cpu":
        return "fp32"  # the GPU's autocast applies (emocare.runtime.autocast)
    if setting == "auto":
        return next(p for p in AUTO_ORDER[encoder] if supported(p, flags))
    if not supported(setting, flags):
        why = {"onnx": "needs the packages onnx and onnxruntime",
               "bf16": "needs a CPU with native bfloat16 (avx512_bf16 or AMX)",
               "openvino_bf16": "needs the packages onnx and openvino, and a CPU with native bfloat16 "
                                "(avx512_bf16 or AMX)"}[setting]
        raise RuntimeError(f"cpu_path: {setting} {why}; use auto or fp32")
    return setting


def module_digest(net: nn.Module) -> str:
    """A digest of a module's weights (what an exported graph depends on, with its class)."""
    h = hashlib.sha256(type(net).__qualname__.encode())
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def onnx_cache() -> Path:
    """Where exported graphs are kept: ``$EMOCARE_ONNX_CACHE``, else ``~/.cache/emocare/onnx``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emocare" / "onnx"
    return Path(os.environ.get("EMOCARE_ONNX_CACHE", default))


@cache
def ort_session(path: str, threads: int, pid: int):
    """An ONNX Runtime session on a graph file with ``threads`` (the process's share of the cores, as torch's), one
    per process (``pid``: a forked child, such as a DataLoader worker, makes its own) and graph: the image and
    video specialists' towers, the same network, share one."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


@cache
def openvino_model(path: str, threads: int, pid: int, precision: str = "bf16"):
    """A graph file compiled by OpenVINO for the CPU with inference ``precision`` (bf16 or f32), on ``threads``,
    one per process (``pid``) and graph, as :func:`ort_session`."""
    import openvino as ov

    return ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                 "INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1"})


class OnnxRunner:
    """``net``'s forward under ONNX Runtime; the graph is exported once per weights and read back after.

    Picklable (a serving worker receives the model pickled): the session is made on first use in each process.
    """

    name = "onnx"

    def __init__(self, net: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str],
                 dynamic: dict[str, dict[int, str]], export: Callable[[], nn.Module] | None = None):
        shape = "x".join(str(d) for d in example[0].shape[1:])  # an image tower is exported for its input size
        self.path = onnx_cache() / f"{module_digest(net)}-{shape}-v{EXPORT_VERSION}.onnx"
        self.inputs = inputs
        if not self.path.is_file():
            training = net.training
            net.eval()  # batch-norm with its running statistics, no dropout: inference, as exported
            try:
                with atomic_path(self.path, suffix=".onnx") as tmp, warnings.catch_warnings():
                    # the TorchScript exporter (deprecated, but needs no onnxscript) and its tracer's notes
                    warnings.simplefilter("ignore")
                    torch.onnx.export(export() if export else net, example, str(tmp), input_names=inputs,
                                      output_names=["out"], dynamic_axes={**dynamic, "out": {0: "batch"}},
                                      dynamo=False)
            finally:
                net.train(training)

    def session(self):
        return ort_session(str(self.path), torch.get_num_threads(), os.getpid())

    def __call__(self, *xs: torch.Tensor) -> torch.Tensor:
        feed = {n: x.detach().cpu().numpy() for n, x in zip(self.inputs, xs, strict=True)}
        return torch.from_numpy(self.session().run(None, feed)[0])


class OpenVinoBf16Runner(OnnxRunner):
    """``net``'s forward compiled by OpenVINO in bfloat16 from the same ONNX export as :class:`OnnxRunner`."""

    name = "openvino_bf16"

    def session(self):
        return openvino_model(str(self.path), torch.get_num_threads(), os.getpid())

    def __call__(self, *xs: torch.Tensor) -> torch.Tensor:
        out = self.session()([x.detach().cpu().numpy() for x in xs])[0]
        return torch.from_numpy(out.copy())  # the compiled model reuses its output buffer on the next call


class Bf16Runner:
    """``net``'s forward under bfloat16 autocast (oneDNN); 4-D inputs (images) in channels_last. Float32 out."""

    name = "bf16"

    def __init__(self, net: nn.Module, channels_last: bool):
        self.net, self.channels_last = net, channels_last
        if channels_last:
            net.to(memory_format=torch.channels_last)  # the same values in another layout: weights unchanged

    def __call__(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            xs = tuple(x.contiguous(memory_format=torch.channels_last) for x in xs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.net(*xs).float()


class TextHidden(nn.Module):
    """A transformers encoder as ``(input_ids, attention_mask) -> last_hidden_state`` (what a runner exports)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def constant_padding(tower: nn.Module, size: int) -> nn.Module:
    """A copy of ``tower`` for ``size`` x ``size`` inputs whose TF "SAME" convolutions (timm's ``Conv2dSame``, which
    work out their padding from each input's shape) pad by constants: the same arithmetic, but the exported graph
    has no shape computations, so ONNX Runtime fuses each padding into its convolution and keeps the whole network
    in its blocked memory layout (1.42 times the images/s on the 2-core EPYC, docs: Speed on a CPU)."""
    from timm.layers import get_same_padding
    from timm.layers.conv2d_same import Conv2dSame

    net = copy.deepcopy(tower).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(lambda _, args, name=name: sizes.__setitem__(name, args[0].shape[-2:]))
             for name, m in net.named_modules() if isinstance(m, Conv2dSame)]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for name, (h, w) in sizes.items():
        conv = net.get_submodule(name)
        ph, pw = (get_same_padding(n, k, s, d) for n, k, s, d in
                  zip((h, w), conv.kernel_size, conv.stride, conv.dilation, strict=True))
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                          conv.groups, conv.bias is not None)
        plain.load_state_dict(conv.state_dict())
        net.set_submodule(name, nn.Sequential(nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), plain))
    return net


def vision_runner(tower: nn.Module, path: str, size: int) -> Callable | None:
    """A runner for a vision tower taking ``[B, 3, size, size]`` float pixels; None for fp32 (the tower itself)."""
    if path in ("onnx", "openvino_bf16"):
        runner = OnnxRunner if path == "onnx" else OpenVinoBf16Runner
        return runner(tower, (torch.zeros(1, 3, size, size),), ["pixels"], {"pixels": {0: "batch"}},
                      export=lambda: constant_padding(tower, size))
    if path == "bf16":
        return Bf16Runner(tower, channels_last=True)
    return None


def text_runner(backbone: nn.Module, path: str) -> Callable | None:
    """A runner ``(input_ids, attention_mask) -> last_hidden_state``; None for fp32 (the backbone itself)."""
    net = TextHidden(backbone).eval()
    if path in ("onnx", "openvino_bf16"):
        ids = torch.ones(2, 8, dtype=torch.long)
        runner = OnnxRunner if path == "onnx" else OpenVinoBf16Runner
        return runner(net, (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"],
                      {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}})
    if path == "bf16":
        return Bf16Runner(net, channels_last=False)
    return None


def _runner(model: nn.Module, path: str) -> Callable | None:
    if model.modality == "text":
        return text_runner(model.backbone, path)
    size = model.preprocess["size"]
    return vision_runner(model.tower, path, size if isinstance(size, int) else size[0])


def use_cpu_path(model: nn.Module, setting: str, device: torch.device) -> str:
    """Give a specialist (text, image or video) the runner ``setting`` chooses for it; returns the path taken.

    With ``auto``, a path whose runner cannot be made for this model (an architecture ONNX export does not
    handle) gives way to the next, with a warning. The fusion model and anything without an encoder are left
    as they are (``fp32``).
    """
    modality = getattr(model, "modality", None)
    if modality not in ("text", "image", "video"):
        return "fp32"
    encoder = "text" if modality == "text" else "vision"
    path = choose_cpu_path(setting, encoder, device)
    while True:
        try:
            model.fast = _runner(model, path)
            return path
        except Exception as e:  # noqa: BLE001 - any export failure: the next path, or the error when asked for
            if setting != "auto" or path == "fp32":
                raise
            following = AUTO_ORDER[encoder][AUTO_ORDER[encoder].index(path) + 1:]
            fallback = next(p for p in following if supported(p))
            warnings.warn(f"cpu_path auto: the {modality} encoder cannot run on {path} ({type(e).__name__}: "
                          f"{str(e)[:200]}); using {fallback}", stacklevel=2)
            path = fallback
