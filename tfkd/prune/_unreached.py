"""The warning `prune` and `cluster_weights` give for the layers they leave as they are:
those inside blocks of the user's own class and inside wrappers not of tfkd (the rebuilt
model keeps both whole), and blocks of a model never called whose `build` may make
layers."""

import keras

from tfkd import _build_code, _graph, _kernels

# By action: the entry point, what it makes of a layer, and the wrapper a user's block
# can hold instead (for `message`).
ACTIONS = {
    "prune": ("tfkd.prune.prune", "pruned", "tfkd.prune.PrunedLayer(layer, schedule)"),
    "cluster": (
        "tfkd.cluster.cluster_weights",
        "clustered",
        "tfkd.cluster.ClusteredLayer(layer, clusters)",
    ),
}


def message(held, include_test, exclude_test, action):
    """The warning for the layers inside `held`'s blocks and wrappers that `include_test`
    (or the default: every supported kernel) picks and `exclude_test` does not leave out,
    and, with the default selection, for blocks not built yet (a wrapper's, too) whose
    own `build` may make layers (a never-called model's); None when there are none. A
    selector function that raises on such a layer (it was not in the model's layers
    before) does not pick it: an `include` leaves it out of the warning, an `exclude`
    leaves it in."""
    found = _Unreached()
    for block, inside in held.items():
        if exclude_test is not None and _picks(exclude_test, block):
            continue
        for path, layer, maker in inside:
            if (
                _kernels.unsupported_reason(layer) is None
                and (include_test is None or _picks(include_test, layer))
                and (exclude_test is None or not _picks(exclude_test, layer))
            ):
                found.add(path, layer, maker)
        prunable_inside = any(_kernels.unsupported_reason(layer) is None for _, layer, _ in inside)
        wrapped = block.layer if _graph.is_foreign_wrapper(block) else None
        if include_test is None and not prunable_inside and _may_build_layers(wrapped or block):
            path = block.name if wrapped is None else f"{block.name}/{wrapped.name}"
            found.unbuilt.append(f"{path!r} ({type(wrapped or block).__name__})")
    return found.message(*ACTIONS[action])


def _picks(test, layer):
    try:
        return bool(test(layer))
    except Exception:  # the user's function, on a layer it may not expect
        return False


class _Unreached:
    """The layers `message` names, by where they are, and its sentences."""

    def __init__(self):
        self.inside_blocks, self.wrapped, self.unbuilt, self.dense = [], [], [], False

    def add(self, path, layer, maker):
        if not _graph.is_foreign_wrapper(maker):
            self.inside_blocks.append(f"{path!r} (made by {type(maker).__name__})")
            return
        self.wrapped.append(f"{path!r} (in {type(maker).__name__})")
        self.dense = self.dense or (
            isinstance(maker, keras.layers.TimeDistributed)
            and maker.layer is layer
            and isinstance(layer, keras.layers.Dense)
        )

    def message(self, entry, made, wrapper):
        sentences = [
            sentence(entry, made, wrapper)
            for items, sentence in (
                (self.inside_blocks, self._inside_blocks),
                (self.wrapped, self._wrapped),
                (self.unbuilt, self._unbuilt),
            )
            if items
        ]
        return " ".join(sentences) or None

    def _inside_blocks(self, entry, made, wrapper):
        return (
            f"{entry}: these layers are inside layers of your own class, which the new model "
            f"keeps whole (their code makes them), so they are not {made}: "
            f"{', '.join(self.inside_blocks)}. To have them {made}, wrap each in {wrapper} in "
            "the code that makes it; to leave them as they are without this warning, pass "
            "the outer blocks' names in `exclude`."
        )

    def _wrapped(self, entry, made, wrapper):
        dense = (
            " A Dense acts on the last axis of inputs of any rank, as TimeDistributed(Dense) "
            f"does: use the Dense alone, without TimeDistributed, to have it {made}."
        )
        return (
            f"{entry}: these layers are inside wrappers that are not tfkd's, which call "
            f"them themselves and which the new model keeps whole, so they are not {made}: "
            f"{', '.join(self.wrapped)}.{dense if self.dense else ''} To leave them as they "
            "are without this warning, pass the wrappers' names in `exclude`."
        )

    def _unbuilt(self, entry, made, wrapper):
        return (
            f"{entry}: these layers of your own class are not built yet (the model was never "
            f"called), so the layers their `build` makes, if any, cannot be seen; the new "
            f"model keeps the blocks whole, so such layers will not be {made}. Blocks: "
            f"{', '.join(self.unbuilt)}. A `build` that makes only weights is fine; otherwise "
            "build the model first (call it on a batch, or start a keras.Sequential with a "
            "keras.Input) to have those layers named, or pass the blocks' names in `exclude` "
            "to leave them as they are without this warning."
        )


def _may_build_layers(block):
    """Whether `block` (a layer of the user's own class) is not built, is not a layer that
    the selection wraps itself (a subclass of Keras's Dense), and has a `build` of the
    user's own code that may make layers (`_build_code`: one that makes weights alone
    is not named)."""
    if block.built or _kernels.unsupported_reason(block) is None:
        return False
    return _build_code.build_may_make_layers(block)
