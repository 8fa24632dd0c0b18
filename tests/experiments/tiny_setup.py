"""Tiny experiment configs shared by the experiment tests (a few seconds each on a CPU)."""

TINY = {
    "name": "tiny",
    "data": {"name": "mnist5k", "subset": [256, 200], "batch_size": 64, "eval_batch_size": 100},
    "model": {"name": "cnn", "widths": [4, 4, 8, 8]},
    "optimizer": {"name": "sfw", "mode": "k_support", "k": 0.3, "width": 5.0, "lr": 0.1},
    "schedule": {"name": "cosine", "warmup_epochs": 0.5},
    "training": {"epochs": 2, "seed": 3, "progress": False},
    "sweep": {"unstructured": [0.5, 0.9], "filters": [0.25, 0.5], "lowrank": [0.5, 0.75]},
}


def tiny(**sections) -> dict:
    """TINY with some sections updated: tiny(optimizer={"name": "sgd"})."""
    out = dict(TINY)
    for key, value in sections.items():
        out[key] = {**TINY[key], **value} if isinstance(TINY.get(key), dict) else value
    return out
