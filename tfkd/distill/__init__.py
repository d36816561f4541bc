"""Knowledge distillation: `Distiller` and its losses."""

from tfkd.distill import mixing, schedules
from tfkd.distill._task import UNLABELED
from tfkd.distill.callbacks import NonFiniteLossGuard, StudentCheckpoint
from tfkd.distill.distiller import Distiller
from tfkd.distill.ensemble import (
    SoftenedAverage,
    TeacherLogits,
    softened_average,
    teacher_ensemble,
)
from tfkd.distill.features import (
    AttentionTransfer,
    FeatureDistillation,
    attention_map_distance,
    mean_squared_error,
)
from tfkd.distill.logits import (
    CorrelationDistillation,
    DecoupledDistillation,
    correlation_distance,
    decoupled_kl_divergence,
)
from tfkd.distill.losses import (
    DistillationLoss,
    LogitsDistillation,
    kl_divergence,
    standardize_logits,
)
from tfkd.distill.propagation import LabelGraph, propagate_labels
from tfkd.distill.relational import RelationalDistillation, relational_distance
from tfkd.distill.teacher_cache import teacher_outputs, with_teacher_outputs
from tfkd.distill.teacher_shards import TeacherShards, write_teacher_shards

__all__ = [
    "UNLABELED",
    "AttentionTransfer",
    "CorrelationDistillation",
    "DecoupledDistillation",
    "DistillationLoss",
    "Distiller",
    "FeatureDistillation",
    "LabelGraph",
    "LogitsDistillation",
    "NonFiniteLossGuard",
    "RelationalDistillation",
    "SoftenedAverage",
    "StudentCheckpoint",
    "TeacherLogits",
    "TeacherShards",
    "attention_map_distance",
    "correlation_distance",
    "decoupled_kl_divergence",
    "kl_divergence",
    "mean_squared_error",
    "mixing",
    "propagate_labels",
    "relational_distance",
    "schedules",
    "softened_average",
    "standardize_logits",
    "teacher_ensemble",
    "teacher_outputs",
    "with_teacher_outputs",
    "write_teacher_shards",
]
