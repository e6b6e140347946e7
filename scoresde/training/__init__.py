"""Training layer: typed configs and their rules, model building, checkpoints, EMA, the training step,
multi-process training and the run log (docs/architecture.md)."""
