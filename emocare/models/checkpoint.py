"""Checkpoints: save and read any EmoCare model's file, safely.

Checkpoints hold tensors and plain values only (dicts, lists, strings, numbers, bytes) and are
loaded with ``torch.load(weights_only=True)``: a file that would need arbitrary code to unpickle
is refused, so a shared `models/` folder (a DVC remote) cannot run code on the machines that load
it. `emocare models convert` rewrites an older file the user trusts into that form.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emocare.io import atomic_path


class UnsafeCheckpoint(ValueError):
    """A checkpoint that cannot be loaded without running arbitrary code."""


def plain(obj, where: str = "checkpoint"):
    """``obj`` with every value a tensor or a plain type (numpy values and paths converted); else ValueError."""
    if isinstance(obj, np.generic):  # before the builtins: np.float64 is a float subclass, yet pickles as numpy
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if obj is None or type(obj) in (str, bytes, bool, int, float) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {str(k): plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, Path):
        return str(obj)
    raise ValueError(f"{where}: a {type(obj).__name__} cannot be stored in a safe checkpoint")


def save_checkpoint(path: str | Path, model: nn.Module, **extra) -> None:
    """Atomically save weights plus everything needed to rebuild ``model`` (tensors and plain values only)."""
    payload = {"kind": model.checkpoint_kind, "labels": list(model.labels), "spec": model.spec(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    save_payload(payload, path)


def save_payload(payload: dict, path: str | Path) -> None:
    """Atomically save a checkpoint's payload (tensors and plain values only; else ValueError).

    ``torch.save`` goes through a file object: saved to a path, the archive's inner folder would be named
    after the random temporary file, so the same weights would give different bytes (and DVC hashes)."""
    payload = plain(payload)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's payload, loaded with ``weights_only=True``; :class:`UnsafeCheckpoint` if it needs more."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines()
        why = next((x.strip() for x in lines if "Unsupported global" in x), lines[-1] if lines else "")
        raise UnsafeCheckpoint(
            f"{path}: refused to load: the file needs arbitrary code to unpickle, which a checkpoint must never "
            f"need ({why}). If it is an older EmoCare checkpoint from a source you trust, rewrite it in the "
            f"safe form with `emocare models convert {path}`.") from None


def convert_checkpoint(path: str | Path, out: str | Path | None = None) -> dict:
    """Rewrite a checkpoint the user trusts (full unpickling) with tensors and plain values only."""
    payload = torch.load(path, map_location="cpu", weights_only=False)  # the caller vouches for this file
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ValueError(f"{path}: not an EmoCare checkpoint (no state_dict)")
    out = Path(out or path)
    save_payload(payload, out)
    read_checkpoint(out)
    return {"converted": str(path), "out": str(out), "kind": payload.get("kind")}


def load_model(path: str | Path, rebuild: Callable[[str, dict, list[str]], nn.Module],
               device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model ``rebuild(kind, spec, labels)`` makes for a checkpoint, its weights loaded, in eval mode;
    returns (model, payload)."""
    payload = read_checkpoint(path)
    model = rebuild(payload["kind"], payload["spec"], list(payload["labels"]))
    model.load_state_dict(payload["state_dict"], assign=True)  # the loaded tensors themselves: no second copy
    return model.to(device).eval(), payload
