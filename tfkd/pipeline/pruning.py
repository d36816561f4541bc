"""The prune stage, and which layers of a model an N:M pattern can apply to."""

import contextlib
import numbers
import re
import warnings

from tfkd import _checks
from tfkd.pipeline import architectures
from tfkd.pipeline._fit import steps_per_epoch
from tfkd.pipeline.stage import check_keras_input, invalid_argument, register_stage
from tfkd.pipeline.training import _Training, training_arguments

# Masks are updated at least this many times while sparsity rises, so that a short run
# (`--quick`) prunes gradually too, and at most every 100 steps (tfmot's default).
_MASK_UPDATES = 8
_MAX_FREQUENCY = 100


@contextlib.contextmanager
def reported_unreached(model, exclude, action, context):
    """Around `tfkd.prune.prune` (or `cluster_weights`, `action="cluster"`) in a stage:
    its warning about the layers inside the user's blocks that it leaves as they are goes
    to the log and into the list this yields (the stage's notes) instead."""
    from tfkd.prune.pruning import _unreached_layers

    note = _unreached_layers(model, exclude=exclude, action=action)
    notes = [] if note is None else [note]
    for line in notes:
        context.log(line)
    with quiet_unreached():
        yield notes


@contextlib.contextmanager
def quiet_unreached():
    """Silences the warning of `reported_unreached` (where a stage rebuilds a model)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"tfkd\.\w+\.\w+: these layers (are inside|of your own class)"
        )
        yield


@register_stage("prune")
@training_arguments(epochs=2, learning_rate=5e-4)
class Prune(_Training):
    """Prunes the incoming model by magnitude while it trains, then strips the wrappers.

    Sparsity rises from 0 to `target_sparsity` over the first 70% of the steps (polynomial
    decay, masks updated at least 8 times on the way), then holds while the model
    recovers. With `teacher`, training is distillation, as in `Distill` (every
    training image, the distillation keys below); without, it trains on the labelled
    examples only.

    With an N:M `pattern`, layers whose input channels are not a multiple of M (a
    first convolution on grayscale images has one) are left dense and listed in the
    stage's details and the report. It is an error, raised before any stage runs, when
    the pattern fits no layer of the model the stage will receive.

    Args:
        target_sparsity: fraction of each pruned kernel set to zero (the name of
            `tfkd.prune`'s schedules; `sparsity`, its former name, is still read).
            Defaults to `0.5`.
        pattern: `"unstructured"` or `"N:M"` (see `tfkd.prune.prune`); an N:M pattern
            needs `target_sparsity` to be its own, `1 - N/M` (0.5 for `"2:4"`).
            Defaults to `"unstructured"`.
        exclude: layers to leave dense: a list of layer names or regular expressions
            that match whole names (`"conv1"`, `"conv.*"`). Defaults to `None`.
        epochs: Defaults to `2`.
        teacher: an earlier stage to distil from (or a list of them, as in
            `Distill`), or `None` for labels only. Defaults to `None`.
        learning_rate: Defaults to `5e-4`.
        method, method_arguments, augmentation, mixup, cutmix, propagation: as in `Distill`;
            all but `augmentation` need `teacher`. Default to `"kd"` and `None`.
        **kwargs: `temperature`, `student_loss_weight`, `batch_size`, `name`, `from_stage`.
    """

    compresses = True

    renamed_arguments = {"sparsity": "target_sparsity"}

    def __init__(
        self,
        target_sparsity: float = 0.5,
        pattern: str = "unstructured",
        exclude: list | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        valid = isinstance(target_sparsity, numbers.Real) and not isinstance(target_sparsity, bool)
        if not valid or not 0 <= target_sparsity < 1:
            raise invalid_argument(
                "target_sparsity",
                "`target_sparsity` must be in [0, 1). "
                f"Received: target_sparsity={target_sparsity!r}",
                ValueError if valid else TypeError,
            )
        _check_pattern(pattern)
        try:
            _checks.check_sparsity_fits_pattern(
                pattern, target_sparsity, f"target_sparsity={target_sparsity!r}"
            )
        except ValueError as error:
            raise invalid_argument("target_sparsity", str(error)) from None
        _check_exclude(exclude)
        self.target_sparsity, self.pattern = float(target_sparsity), pattern
        self.exclude = None if exclude is None else list(exclude)

    @property
    def sparsity(self):
        """Deprecated: `target_sparsity`."""
        warnings.warn(
            "`sparsity` is deprecated and will be removed; read `target_sparsity`.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.target_sparsity

    def schedule(self, steps):
        """The `tfkd.prune.PolynomialDecay` this stage uses for `steps` training steps."""
        from tfkd import prune as prune_lib

        end_step = max(1, int(0.7 * steps))
        frequency = max(1, min(_MAX_FREQUENCY, end_step // _MASK_UPDATES))
        return prune_lib.PolynomialDecay(
            0.0, self.target_sparsity, begin_step=0, end_step=end_step, frequency=frequency
        )

    def _output_spec(self, incoming):
        return architectures.trained(incoming)  # the stripped model: the same layers

    def _check_input_model(self, build, incoming):
        if self.pattern != "unstructured" or self.exclude:
            self.layers_left_dense(build())

    def layers_left_dense(self, model):
        """`{layer name: why}` of the prunable layers `pattern` cannot apply to.

        Raises:
            ValueError: `exclude` names no layer of `model`, or nothing is left to prune.
        """
        candidates = _prunable_layers(model)
        names = [layer.name for layer in candidates]
        for expression in self.exclude or []:
            if not any(_matches(expression, layer.name) for layer in _leaf_layers(model)):
                raise invalid_argument(
                    "exclude",
                    f"`exclude` matches no layer of the incoming model. Received: "
                    f"exclude={expression!r}. Prunable layers: {names}",
                )
        kept = [layer for layer in candidates if not self._excluded(layer)]
        unfit = {layer.name: _unfit_reason(layer, self.pattern) for layer in kept}
        unfit = {name: reason for name, reason in unfit.items() if reason}
        if not kept or len(unfit) == len(kept):
            raise invalid_argument(
                "pattern" if kept else "exclude",
                f"Nothing to prune: pattern {self.pattern!r} fits none of the incoming model's "
                f"prunable layers. Received: pattern={self.pattern!r}, exclude={self.exclude!r}; "
                f"layers: {unfit or names}. Use "
                "pattern='unstructured' or exclude fewer layers.",
            )
        return unfit

    def _excluded(self, layer):
        return any(_matches(expression, layer.name) for expression in self.exclude or [])

    def run(self, model, context):
        from tfkd import prune as prune_lib

        check_keras_input(self, model)
        left_dense = self.layers_left_dense(model)
        exclude = [*(self.exclude or []), *map(re.escape, left_dense)]
        examples = self._training_examples(context)
        steps = context.epochs(self.epochs) * steps_per_epoch(context, self.batch_size, examples)
        with reported_unreached(model, exclude or None, "prune", context) as notes:
            pruned = prune_lib.prune(
                model, self.schedule(steps), pattern=self.pattern, exclude=exclude or None
            )
        details = self.train(pruned, context)
        details["sparsity"] = round(float(prune_lib.summary(pruned).sparsity), 4)
        if notes:
            details.setdefault("notes", []).extend(notes)
        if left_dense:
            details["left_dense"] = left_dense
            note = f"pattern {self.pattern} does not fit, left dense: " + "; ".join(
                f"{name} ({reason})" for name, reason in left_dense.items()
            )
            details.setdefault("notes", []).append(note)
            context.log(note)
        return prune_lib.strip(pruned), details


@register_stage("prune_channels")
@training_arguments(epochs=3, learning_rate=5e-4)
class PruneChannels(Prune):
    """Removes whole channels of the incoming model while it trains: a smaller model.

    The fraction `target_sparsity` of the channels of every group that can shrink (see
    `tfkd.prune.channel_groups`) is masked gradually, on the schedule of `Prune`, those
    of lowest `importance` first; then `tfkd.prune.shrink` removes them, so the next
    stages and the exported file get narrower layers. Groups that cannot shrink (the
    logits, channels that reach a reshape) are left whole and listed in the details.
    Training is distillation with `teacher`, as in `Prune`.

    Args:
        target_sparsity: the fraction of each group's channels to remove. Defaults to
            `0.5`.
        importance: `"l1"`, `"l2"`, `"batch_norm"` or `"taylor"` (see
            `tfkd.prune.ChannelMask`). Defaults to `"l1"`.
        exclude: layers whose channels to keep, as in `Prune`. Defaults to `None`.
        epochs: Defaults to `3`.
        **kwargs: the other arguments of `Prune` but `pattern`.
    """

    def __init__(
        self,
        target_sparsity: float = 0.5,
        importance: str = "l1",
        exclude: list | None = None,
        **kwargs,
    ):
        if "pattern" in kwargs:
            raise invalid_argument(
                "pattern",
                "`pattern` is for weight pruning (stage: prune); channel pruning removes "
                f"whole channels. Received: pattern={kwargs['pattern']!r}",
                TypeError,
            )
        super().__init__(target_sparsity=target_sparsity, exclude=exclude, **kwargs)
        if importance not in _checks.CHANNEL_IMPORTANCES:
            raise invalid_argument(
                "importance",
                f"`importance` must be one of {list(_checks.CHANNEL_IMPORTANCES)}. "
                f"Received: importance={importance!r}",
            )
        self.importance = importance

    def _output_spec(self, incoming):
        # The incoming architecture with as many channels removed (which ones, training
        # decides), so that the stages after it are checked before any runs: before, None
        # (unknown) left them unchecked, and a second quantize_aware failed after training.
        return architectures.shrunk(architectures.trained(incoming), self)

    def shrunk(self, model):
        """`model` with the channels this stage removes, for the checks before a run: as
        many of each group, by weight norm (an untrained build's)."""
        from tfkd.prune import shrink

        return shrink(model, self.target_sparsity, exclude=self.exclude)

    def _check_input_model(self, build, incoming):
        from tfkd.prune.channels import check_selection

        try:
            check_selection(build(), exclude=self.exclude)
        except (ValueError, TypeError) as error:
            # A model with nothing to prune is the input's fault where `exclude` is unset.
            argument = "from_stage" if self.exclude is None else "exclude"
            raise invalid_argument(
                argument, f"Stage {self.name!r} (prune_channels): {error}", type(error)
            ) from None

    def run(self, model, context):
        from tfkd import prune as prune_lib

        check_keras_input(self, model)
        examples = self._training_examples(context)
        steps = context.epochs(self.epochs) * steps_per_epoch(context, self.batch_size, examples)
        masked = prune_lib.prune_channels(
            model, self.schedule(steps), importance=self.importance, exclude=self.exclude
        )
        details = self.train(masked, context)
        shrunk = prune_lib.shrink(masked)
        details["parameters_before"] = model.count_params()
        skipped = prune_lib.channel_groups(model).skipped
        if skipped:
            details["left_whole"] = skipped
            details.setdefault("notes", []).append("channels left whole: " + ", ".join(skipped))
        return shrunk, details


def _leaf_layers(model):
    from tfkd import _graph

    return list(_graph.leaf_layers(model))


def _prunable_layers(model):
    """The layers `tfkd.prune.prune` selects by default."""
    from tfkd import _kernels

    return [layer for layer in _leaf_layers(model) if _kernels.unsupported_reason(layer) is None]


def _unfit_reason(layer, pattern):
    """Why an N:M `pattern` cannot apply to `layer`, or None when it can."""
    from tfkd import _kernels

    n_of_m = _checks.parse_pattern(pattern)
    if n_of_m is None:
        return None
    axis = _kernels.input_channel_axis(layer)
    if axis is None:
        return f"{type(layer).__name__}, no input-channel axis"
    channels = _kernels.kernel(layer).shape[axis]
    if channels % n_of_m[1]:
        return f"{channels} input channels, not a multiple of {n_of_m[1]}"
    return None


def _matches(expression, name):
    """`tfkd.prune.prune`'s rule: a layer name, or a regular expression matching whole names."""
    from tfkd.prune.pruning import _name_matches

    return _name_matches(expression, name)


def _check_exclude(exclude):
    if exclude is None:
        return
    if not isinstance(exclude, list | tuple) or not all(isinstance(x, str) for x in exclude):
        raise invalid_argument(
            "exclude",
            "`exclude` must be a list of layer names or regular expressions. "
            f"Received: exclude={exclude!r}",
            TypeError,
        )
    for expression in exclude:
        try:
            re.compile(expression)
        except re.error as error:
            raise invalid_argument(
                "exclude",
                f"`exclude` holds an invalid regular expression ({error}). Received: "
                f"{expression!r}. Escape special characters, e.g. 'block\\\\.1'.",
            ) from None


def _check_pattern(pattern):
    try:
        _checks.parse_pattern(pattern)
    except ValueError as error:
        raise invalid_argument("pattern", str(error)) from None
