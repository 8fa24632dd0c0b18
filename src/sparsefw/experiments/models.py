"""Model from the config: `sparsefw.models.build_model`, seeded, with the model's options."""
from __future__ import annotations

from torch import nn

from ..data.base import DatasetInfo
from ..models import build_model
from .config import ConfigError, ModelConfig


def build_experiment_model(cfg: ModelConfig, info: DatasetInfo, seed: int) -> nn.Module:
    """A freshly initialised model for dataset `info`; initialisation drawn from its own generator
    seeded with `seed` (the global RNG is left as it is)."""
    try:
        return build_model(cfg.name, info.num_classes, info.in_channels, info.image_size, seed=seed,
                           **cfg.options)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"config key 'model.name': {e}") from None
