"""DVC stage fusion: on the cached embeddings, train the fusion model and the ablation's one model per modality
subset (models/fusion/, reports/fusion/), then score them and the specialists (reports/test/, reports/ablation.*,
reports/metrics.json), and draw the learning curve (reports/learning_curve.*). One interpreter for all of it: most
of a fusion experiment's time was interpreters starting and importing torch.

Evaluation (emocare.pipeline.crossval): the held-out test split, or below split.cv_below labelled posts with every
specialist frozen (or a setfit text specialist's features cross-fitted by the train stage, cache/folds/text.npz),
split.folds-fold cross-validation with the final models trained on every label."""

import tempfile
from dataclasses import replace

import numpy as np

from emocare.bundle import evaluation_record, fusion_path, training_record
from emocare.cache import load_cache
from emocare.data.manifest import load_posts
from emocare.io import read_json, write_json
from emocare.labels import MODALITIES, LabelSet
from emocare.params import load_params
from emocare.pipeline.crossval import evaluation_plan, fold_features_path, load_fold_features, post_folds
from emocare.pipeline.evaluate import evaluate_test, headline_metrics, predict_split, run_ablation, write_ablation
from emocare.pipeline.fusion_training import cross_validate, store_evaluation, train_fusion_models
from emocare.pipeline.learning_curve import learning_curve, write_learning_curve

if __name__ == "__main__":
    params, cache, posts = load_params(), load_cache("cache/embeddings"), load_posts("data/posts.jsonl")
    classes = LabelSet.from_params(params)
    labelled = int((cache.labels >= 0).sum())
    plan = evaluation_plan(labelled, params["split"], {m: read_json(f"reports/{m}/info.json") for m in MODALITIES})
    print("evaluation:", plan["why"])
    cv = plan["kind"] == "cv"
    fold = post_folds(posts, cache.labels, params["split"]) if cv else None
    fitted = load_fold_features(fold_features_path("text"), cache.ids, cache.emb["text"].numpy()) if cv else None
    fold_features = {"text": fitted} if fitted is not None else None
    trained_on = training_record(posts, replace(cache, splits=np.where(cache.labels >= 0, "train", ""))
                                 if cv else cache, params["data"]["manifest"], "data/posts.jsonl")
    with tempfile.TemporaryDirectory() as work:
        if cv:
            preds = cross_validate(cache, fold, params["fusion"], params["train"], "reports/fusion", classes, work,
                                   training_data=trained_on, fold_features=fold_features)
        else:
            results = train_fusion_models(cache, params["fusion"], params["train"], "reports/fusion", classes,
                                          training_data=trained_on)
            for name, r in results.items():
                print(name, r.get("skipped") or {k: r[k] for k in ("modalities", "best_val_macro_f1", "best_epoch")})
            preds = predict_split(cache)
        test = evaluate_test(cache, posts, "reports/test", params["evaluate"]["errors"],
                             frame_store=params.get("frame_store"), preds=preds, evaluation=plan)
        rows = run_ablation(cache, preds=preds)
        curve = learning_curve(cache, preds, params["fusion"], params["train"], classes, work, fold,
                               fold_features=fold_features)
    write_ablation(rows, "reports")
    write_learning_curve(curve, "reports")
    behind = labelled if cv else labelled - int((cache.labels[cache.rows("test")] >= 0).sum())
    store_evaluation(fusion_path(), evaluation_record(test, behind, len(classes)))
    metrics = headline_metrics(test, rows)
    write_json("reports/metrics.json", metrics)
    print(metrics["test"])
