"""The cluster stage: weight clustering with fine-tuning, optionally distilling."""

from tfkd import _checks
from tfkd.pipeline import architectures
from tfkd.pipeline.pruning import _check_exclude, quiet_unreached, reported_unreached
from tfkd.pipeline.stage import check_keras_input, invalid_argument, register_stage
from tfkd.pipeline.training import _Training, training_arguments


@register_stage("cluster")
@training_arguments(epochs=2, learning_rate=1e-4)
class Cluster(_Training):
    """Clusters the incoming model's kernels (`tfkd.cluster.cluster_weights`), fine-tunes
    the centroids, and strips: each kernel then holds at most `clusters` values.

    With `teacher`, fine-tuning is distillation, as in `Distill`. A pruned incoming model
    keeps its zeros. The stage's details give each kernel's number of values
    (`unique_values`; its largest over the output channels with `per_channel`), keyed by
    the layer's path from the model ("branch/dense" in a nested model).

    Args:
        clusters: values per kernel (per output channel with `per_channel`), >= 2.
            Defaults to `16`.
        per_channel: centroids of their own for each output channel. Defaults to `False`.
        exclude: layers to leave unclustered, as in `Prune`. Defaults to `None`.
        fold_batch_norm: fold each BatchNormalization into the kernel before it first,
            and cluster the folded kernel (see `tfkd.cluster.cluster_weights`): with
            `per_channel: false` on `export`, the int8 file keeps at most `clusters`
            values per kernel. Defaults to `false`.
        epochs: Defaults to `2`.
        learning_rate: Defaults to `1e-4`.
        **kwargs: the training arguments of `Prune`.
    """

    compresses = True

    def __init__(
        self,
        clusters: int = 16,
        per_channel: bool = False,
        exclude: list | None = None,
        fold_batch_norm: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not _checks.is_integer(clusters) or clusters < 2:
            raise invalid_argument(
                "clusters",
                f"`clusters` must be an integer >= 2. Received: clusters={clusters!r}",
                ValueError if _checks.is_number(clusters) else TypeError,
            )
        for name, value in [("per_channel", per_channel), ("fold_batch_norm", fold_batch_norm)]:
            if not isinstance(value, bool):
                raise invalid_argument(
                    name, f"`{name}` must be true or false. Received: {name}={value!r}", TypeError
                )
        _check_exclude(exclude)
        self.clusters, self.per_channel = int(clusters), per_channel
        self.fold_batch_norm = fold_batch_norm
        self.exclude = None if exclude is None else list(exclude)

    def _output_spec(self, incoming):
        # The incoming model's layers, with clustered kernels.
        return architectures.clustered(architectures.trained(incoming), self)

    def _check_input_model(self, build, incoming):
        from tfkd.cluster.clustering import check_layers_fit, clusterable_layers

        model = build()
        try:
            layers = clusterable_layers(model, exclude=self.exclude, warn=False)
        except (ValueError, TypeError) as error:
            # A model with nothing to cluster is the input's fault where `exclude` is unset.
            argument = "from_stage" if self.exclude is None else "exclude"
            raise invalid_argument(argument, str(error), type(error)) from None
        try:
            check_layers_fit(layers, self.clusters, self.per_channel)
        except ValueError as error:
            raise invalid_argument("clusters", str(error)) from None

    def clustered(self, model, stripped=False):
        """`model` clustered as this stage clusters it (`tfkd.cluster.cluster_weights`),
        and `tfkd.cluster.strip`ped if `stripped`."""
        from tfkd import cluster

        with quiet_unreached():  # `run` reports it once, as a note
            clustered = cluster.cluster_weights(
                model,
                self.clusters,
                per_channel=self.per_channel,
                exclude=self.exclude,
                fold_batch_norm=self.fold_batch_norm,
            )
        return cluster.strip(clustered) if stripped else clustered

    def run(self, model, context):
        from tfkd import cluster

        check_keras_input(self, model)
        with reported_unreached(model, self.exclude, "cluster", context) as notes:
            clustered = self.clustered(model)
        details = self.train(clustered, context)
        if notes:
            details.setdefault("notes", []).extend(notes)
        stripped = cluster.strip(clustered)
        key = "most_unique_per_channel" if self.per_channel else "unique_values"
        counts = details["unique_values"] = {}
        for row in cluster.summary(stripped):
            path, copy = row["path"], 1
            while path in counts:  # two layers of one name in a subclassed block
                copy += 1
                path = f"{row['path']} ({copy})"
            counts[path] = row[key]
        return stripped, details
