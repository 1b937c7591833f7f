"""How the text specialist learns, by the number of labels it has (``train.regime``).

* ``frozen``: the pretrained backbone unchanged, a head on its pooled features. The embeddings the fusion model
  learns from are then label-free (cross-validating the fusion model over them is honest).
* ``setfit``: the sentence encoder tuned contrastively on pairs of labelled posts first (the ``setfit`` package,
  offline from the local backbone folder), then the head on the tuned, frozen features.
* ``finetune``: backbone and head trained together, epochs and warm-up scaled to the data
  (:func:`finetune_schedule`).
* ``auto``: ``setfit`` below :data:`FINETUNE_FROM` training labels (``frozen`` where the setfit package is not
  installed, and said so), ``finetune`` from there.

The choices come from measurements on real data sets (benchmarks/small_data.py; docs/small-data.md): with a few
hundred labels setfit's tuned features beat a regularised linear model on frozen ones, which beats fine-tuning
(it overfits a few hundred posts); from about a thousand labels fine-tuning pays.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
from dataclasses import replace

from emocare.params import TrainConfig

REGIMES = ("frozen", "setfit", "finetune")
# auto: fine-tune from this many training labels (1,000 labelled posts under the default 80/10/10 split), setfit
# below. On three real sets (benchmarks/small_data.py, docs/small-data.md) fine-tuning trailed setfit at 300 labels
# (by 0.028 to 0.036 macro-F1) and led the better baseline at 1,000 (with the linear fusion kind; GoEmotions by
# 0.104, MELD by 0.012, TweetEval by 0.060). setfit at 1,000 labels scored +0.009 / +0.023 / +0.000 over it on
# those sets but its cross-fitting tunes six times, about an hour of a CPU core: not worth it by default.
FINETUNE_FROM = 800
# finetune: at least this many optimiser steps (more epochs for fewer posts; the demo's 1,000 training posts in
# batches of 16 give 63 steps an epoch, so its 4 epochs), and this share of them warming up.
MIN_STEPS = 250
WARMUP_SHARE = 0.1
SETFIT_PAIRS_PER_POST = 5  # setfit's num_iterations (its default 20): pairs drawn per labelled post; measured below


def choose_regime(requested: str, train_labels: int) -> tuple[str, str]:
    """The regime to train in and why, for ``train.regime: requested`` and ``train_labels`` training posts."""
    if requested in REGIMES:
        return requested, f"train.regime: {requested} (set in params.yaml)"
    if requested != "auto":
        raise ValueError(f"train.regime must be auto or one of {', '.join(REGIMES)}, got {requested!r}")
    if train_labels < FINETUNE_FROM:
        if importlib.util.find_spec("setfit") is None:
            return "frozen", (f"auto: {train_labels} training labels, below {FINETUNE_FROM}: setfit would tune the "
                              "encoder, but the setfit package is not installed (pip install setfit), "
                              "so a head on the frozen backbone")
        return "setfit", (f"auto: {train_labels} training labels, below {FINETUNE_FROM}: contrastive tuning of the "
                          "sentence encoder (setfit) learns better than fine-tuning or a frozen backbone from so few")
    return "finetune", f"auto: {train_labels} training labels, at least {FINETUNE_FROM}: fine-tuning pays"


def finetune_schedule(cfg: TrainConfig, train_labels: int, world: int = 1) -> TrainConfig:
    """``cfg`` with at least :data:`MIN_STEPS` optimiser steps (the model section's ``epochs`` is the least number
    of epochs, patience still stops early) and :data:`WARMUP_SHARE` of them warming up."""
    per_epoch = max(1, math.ceil(train_labels / (cfg.batch_size * world)))
    epochs = max(cfg.epochs, math.ceil(MIN_STEPS / per_epoch))
    return replace(cfg, epochs=epochs, warmup_steps=max(1, round(WARMUP_SHARE * epochs * per_epoch)))


def setfit_tune(model, texts: list[str], labels: list[int], cfg: TrainConfig) -> dict:
    """Tune ``model``'s backbone contrastively on the labelled ``texts`` (setfit's sentence-transformer stage,
    from the local folder the backbone was loaded from), then copy the tuned weights into it; returns what ran."""
    try:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError as e:
        raise ImportError(f"train.regime: setfit needs the setfit package: pip install setfit ({e})") from e

    setfit = SetFitModel.from_pretrained(model.backbone.name_or_path, local_files_only=True)
    with tempfile.TemporaryDirectory() as scratch:  # setfit's Trainer wants an output folder; nothing is kept
        args = TrainingArguments(output_dir=scratch, batch_size=cfg.batch_size, num_iterations=SETFIT_PAIRS_PER_POST,
                                 num_epochs=1, seed=cfg.seed, max_length=model.max_length, report_to="none",
                                 save_strategy="no", show_progress_bar=False)
        trainer = Trainer(model=setfit, args=args,
                          train_dataset=Dataset.from_dict({"text": texts, "label": labels}))
        trainer.train_embeddings(*trainer.dataset_to_parameters(trainer.train_dataset), args=args)
    tuned = setfit.model_body[0].auto_model.state_dict()
    missing, unexpected = model.backbone.load_state_dict(tuned, strict=False)
    if unexpected or [k for k in missing if "position_ids" not in k]:
        raise ValueError(f"setfit's tuned encoder does not match the text backbone (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return {"setfit_pairs_per_post": SETFIT_PAIRS_PER_POST, "setfit_epochs": 1}
