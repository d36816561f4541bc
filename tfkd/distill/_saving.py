"""Saving and loading a `Distiller`: its config (teacher, student, losses, schedules)
and its compiled state, through Keras's serialization."""

import keras

from tfkd.distill import schedules


class Saving:
    """`Distiller`'s `get_config`, `from_config` and `compile_from_config`; it keeps the
    constructor's arguments in `self._config`."""

    def compile_from_config(self, config):
        # Keras skips this for models that override `compile`; restore the
        # compiled state of a loaded `.keras` file through `Distiller.compile`'s checks.
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update(
            teacher=keras.saving.serialize_keras_object(self.teacher),
            student=keras.saving.serialize_keras_object(self.student),
            distillation_losses=keras.saving.serialize_keras_object(
                self._config["distillation_losses"]
            ),
            distillation_loss_weights=_serialize_weights(self._config["distillation_loss_weights"]),
            student_loss_weight=schedules.serialize(self._config["student_loss_weight"]),
            temperature=schedules.serialize(self._config["temperature"]),
            augmentation=keras.saving.serialize_keras_object(self.augmentation),
            mixup=self._config["mixup"],
            cutmix=self._config["cutmix"],
            seed=self._config["seed"],
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student", "distillation_losses", "augmentation"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        for key in ("student_loss_weight", "temperature"):
            config[key] = schedules.deserialize(config[key])
        weights = config["distillation_loss_weights"]
        if isinstance(weights, (list, tuple)):
            config["distillation_loss_weights"] = [schedules.deserialize(w) for w in weights]
        return cls(**config)


def _serialize_weights(weights):
    if isinstance(weights, (list, tuple)):
        return [schedules.serialize(weight) for weight in weights]
    return schedules.serialize(weights)
