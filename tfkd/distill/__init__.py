"""Knowledge distillation: `Distiller` and its losses."""

from tfkd.distill.callbacks import NonFiniteLossGuard, StudentCheckpoint
from tfkd.distill.distiller import Distiller, with_teacher_outputs
from tfkd.distill.losses import (
    DistillationLoss,
    FeatureDistillation,
    LogitsDistillation,
    kl_divergence,
    mean_squared_error,
)

__all__ = [
    "DistillationLoss",
    "Distiller",
    "FeatureDistillation",
    "LogitsDistillation",
    "NonFiniteLossGuard",
    "StudentCheckpoint",
    "kl_divergence",
    "mean_squared_error",
    "with_teacher_outputs",
]
