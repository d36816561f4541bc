"""Keras plumbing of the Distiller: the teacher frozen in what it trains, and its losses
scaled across replicas as Keras scales its own."""

import keras
from keras import ops


class FrozenTeacher:
    """Mixin of `Distiller`: leaves the teacher's variables out of the trainable ones.

    The teacher is frozen here, in what the Distiller trains, rather than by
    `teacher.trainable = False`: that would change the caller's model and every layer in
    it, for good. The class using it has a `teacher`.
    """

    @property
    def trainable_weights(self):
        return self._without_teacher(super().trainable_weights)

    @property
    def trainable_variables(self):
        return self._without_teacher(super().trainable_variables)

    @property
    def non_trainable_weights(self):
        return self._rest(self.weights, self.trainable_weights)

    @property
    def non_trainable_variables(self):
        return self._rest(self.variables, self.trainable_variables)

    def _without_teacher(self, variables):
        teacher = {id(variable) for variable in self.teacher.variables}
        return [variable for variable in variables if id(variable) not in teacher]

    @staticmethod
    def _rest(variables, trained):
        trained = {id(variable) for variable in trained}
        return [variable for variable in variables if id(variable) not in trained]


def reduce(per_example, sample_weight):
    per_example = ops.cast(per_example, "float32")
    if sample_weight is not None:
        weights = ops.cast(sample_weight, "float32")
        if len(weights.shape) > len(per_example.shape):
            # A weight per token for a loss per example (a feature loss on a sequence
            # model): each example weighs its tokens' mean. Before, the weights were
            # flattened against the losses, and the step failed on their shapes.
            weights = ops.mean(
                weights, axis=tuple(range(len(per_example.shape), len(weights.shape)))
            )
        if len(weights.shape) != len(per_example.shape):
            # One weight per example, broadcast over any further axes (e.g. tokens); a
            # weight per token has the losses' shape already.
            weights = ops.reshape(weights, (-1,) + (1,) * (len(per_example.shape) - 1))
        per_example = per_example * weights
    return ops.mean(per_example) / replica_count()


def unscale(value):
    return value * replica_count()


def replica_count():
    # Under tf.distribute, Keras divides each replica's loss by the replica
    # count; the distillation terms must be scaled the same way.
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync
