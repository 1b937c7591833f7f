"""The training pipeline's steps, run by ``stages/`` (and benchmarks and tests): the specialists, their embedding
caches, the fusion and ablation models, evaluation and reports. No library module imports this package."""
