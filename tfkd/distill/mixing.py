"""Mixup and CutMix for consistent teaching: pure `keras.ops` functions on a batch.

The `Distiller` applies them inside its training step (`mixup=` and `cutmix=`), so
the teacher and the student see the same mixed images (function matching, Beyer et
al., CVPR 2022). Each example `i` is mixed with a partner `partner_index[i]` of the
same batch; `mix_ratio[i]` is the share of example `i` in the result, which also
weighs its label against the partner's in the task loss.
"""

import keras
import numpy as np
from keras import ops

from tfkd._checks import MIXING_ALPHA_LIMIT, is_number, shown
from tfkd.distill._checks import is_tensor, tensor_shape

__all__ = ["cutmix", "mixup", "sample_mixing"]


def mixup(images, partner_index, mix_ratio):
    """Blends each image with its partner: `r * x[i] + (1 - r) * x[partner[i]]`.

    Args:
        images: A batch, shape `(batch, ...)`.
        partner_index: Int tensor `(batch,)`, the partner of each example.
        mix_ratio: Float tensor `(batch,)` in [0, 1], the share of each example.

    Returns:
        The mixed batch, same shape and dtype as `images`.

    Example:

    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [1.0, 1.0]], dtype="float32")
    >>> mixed = mixup(x, np.array([1, 0]), np.array([0.75, 0.5], dtype="float32"))
    >>> keras.ops.convert_to_numpy(mixed).tolist()
    [[0.25, 0.25], [0.5, 0.5]]
    """
    batch = _batch_size(tensor_shape("images", images))
    _check_partners(partner_index, batch)
    _check_per_example("mix_ratio", mix_ratio, batch, (), low=0.0, high=1.0)
    images = ops.convert_to_tensor(images)
    ratio = _per_example(ops.cast(mix_ratio, images.dtype), images)
    partners = ops.take(images, partner_index, axis=0)
    return ratio * images + (1.0 - ratio) * partners


def cutmix(images, partner_index, box):
    """Pastes a box of each image's partner into it (Yun et al., ICCV 2019).

    Args:
        images: A batch of images, shape `(batch, height, width, channels)`.
        partner_index: Int tensor `(batch,)`, the partner of each example.
        box: Float tensor `(batch, 4)`: top, left, bottom, right of the pasted
            box as fractions of the height and width, clipped to [0, 1].

    Returns:
        `(mixed, mix_ratio)`: the images, and per example the share of its own
        pixels (1 minus the box's area), which weighs its label.

    Example:

    >>> import numpy as np
    >>> x = np.stack([np.zeros((4, 4, 1)), np.ones((4, 4, 1))]).astype("float32")
    >>> box = np.array([[0.0, 0.0, 0.5, 1.0]] * 2, dtype="float32")
    >>> mixed, ratio = cutmix(x, np.array([1, 0]), box)
    >>> keras.ops.convert_to_numpy(mixed)[0, :, 0, 0].tolist()
    [1.0, 1.0, 0.0, 0.0]
    >>> keras.ops.convert_to_numpy(ratio).tolist()
    [0.5, 0.5]
    """
    shape = tensor_shape("images", images, min_rank=4)
    if shape is not None and len(shape) != 4:
        raise ValueError(
            "`images` must be a batch of images, shape (batch, height, width, channels). "
            f"Received: images of shape {shape}."
        )
    _check_partners(partner_index, _batch_size(shape))
    _check_per_example("box", box, _batch_size(shape), (4,))
    images = ops.convert_to_tensor(images)
    height, width = images.shape[1], images.shape[2]
    box = ops.cast(box, "float32")
    rows = (ops.arange(height, dtype="float32") + 0.5) / height
    columns = (ops.arange(width, dtype="float32") + 0.5) / width
    inside_rows = (rows[None, :] >= box[:, :1]) & (rows[None, :] < box[:, 2:3])
    inside_columns = (columns[None, :] >= box[:, 1:2]) & (columns[None, :] < box[:, 3:4])
    inside = inside_rows[:, :, None] & inside_columns[:, None, :]
    pasted = ops.mean(ops.cast(inside, "float32"), axis=(1, 2))
    partners = ops.take(images, partner_index, axis=0)
    mixed = ops.where(inside[..., None], partners, images)
    return mixed, 1.0 - pasted


def check_cutmix_inputs(cutmix_alpha, shapes):
    """Refuses CutMix for models whose inputs (`shapes`, per example; None if unknown)
    are not one batch of images `(height, width, channels)`."""
    if cutmix_alpha is None or shapes is None:
        return
    if len(shapes) != 1 or len(shapes[0]) != 3:
        raise ValueError(
            "`cutmix` pastes a box of one image into another, so it needs models that take "
            "one input of images (height, width, channels). Received: cutmix="
            f"{cutmix_alpha!r} and inputs of shape {[tuple(shape) for shape in shapes]} per "
            "example. Use `mixup` for other inputs."
        )


def sample_mixing(images, seed_generator, mixup_alpha=None, cutmix_alpha=None):
    """Draws partners and ratios and mixes a batch (mixup, CutMix, or one per batch).

    With both alphas each batch uses mixup or CutMix with probability 1/2, as
    timm does. Ratios follow `Beta(alpha, alpha)`; the partners are a random
    permutation of the batch.

    Args:
        images: The batch to mix.
        seed_generator: A `keras.random.SeedGenerator` (tracked by the caller,
            so the draws differ at every step on every backend).
        mixup_alpha: Beta parameter of mixup, or `None` for no mixup.
        cutmix_alpha: Beta parameter of CutMix, or `None` for no CutMix.

    Returns:
        `(mixed, partner_index, mix_ratio)`.
    """
    tensor_shape("images", images, min_rank=1 if cutmix_alpha is None else 4)
    if not isinstance(seed_generator, keras.random.SeedGenerator):
        raise TypeError(
            "`seed_generator` must be a keras.random.SeedGenerator, so that the draws change "
            f"at every step. Received: seed_generator={shown(seed_generator)} of type "
            f"{type(seed_generator).__name__}. Pass keras.random.SeedGenerator(seed)."
        )
    mixup_alpha = validate_alpha("mixup_alpha", mixup_alpha)
    cutmix_alpha = validate_alpha("cutmix_alpha", cutmix_alpha)
    if mixup_alpha is None and cutmix_alpha is None:
        raise ValueError(
            "`sample_mixing` needs `mixup_alpha`, `cutmix_alpha` or both. Received: "
            "mixup_alpha=None and cutmix_alpha=None."
        )
    batch = ops.shape(images)[0]
    partner_index = keras.random.shuffle(ops.arange(batch), seed=seed_generator)
    results = []
    if mixup_alpha is not None:
        ratio = _beta(batch, mixup_alpha, seed_generator)
        results.append((mixup(images, partner_index, ratio), ratio))
    if cutmix_alpha is not None:
        box = _random_box(batch, _beta(batch, cutmix_alpha, seed_generator), seed_generator)
        results.append(cutmix(images, partner_index, box))
    if len(results) == 1:
        mixed, ratio = results[0]
    else:
        use_mixup = keras.random.uniform((), seed=seed_generator) < 0.5
        mixed = ops.where(use_mixup, results[0][0], results[1][0])
        ratio = ops.where(use_mixup, results[0][1], results[1][1])
    return mixed, partner_index, ratio


def _beta(batch, alpha, seed_generator):
    return keras.random.beta((batch,), alpha, alpha, seed=seed_generator, dtype="float32")


def _random_box(batch, ratio, seed_generator):
    """Boxes covering `1 - ratio` of the image, centred uniformly, then clipped."""
    side = ops.sqrt(1.0 - ratio)
    centre = keras.random.uniform((batch, 2), seed=seed_generator)
    low = ops.clip(centre - side[:, None] / 2, 0.0, 1.0)
    high = ops.clip(centre + side[:, None] / 2, 0.0, 1.0)
    return ops.concatenate([low, high], axis=-1)


def _per_example(values, like):
    return ops.reshape(values, (-1,) + (1,) * (len(like.shape) - 1))


def validate_alpha(name, alpha):
    """Raises a clear error unless `alpha` (argument `name`) is `None` or a number > 0."""
    if alpha is None:
        return None
    if not is_number(alpha) or not 0 < alpha <= MIXING_ALPHA_LIMIT:
        raise ValueError(
            f"`{name}` must be None (off) or the Beta distribution's alpha, a finite number "
            f"> 0 and at most {MIXING_ALPHA_LIMIT:g} (float32 turns larger ones to "
            f"infinity). Received: {name}={shown(alpha)}. Typical values: 0.2 to 1.0."
        )
    return float(alpha)


def _check_partners(partner_index, batch):
    """`partner_index`: integers, one per example, each an index of the batch."""
    last = None if batch is None else batch - 1
    _check_per_example("partner_index", partner_index, batch, (), low=0, high=last)
    dtype = keras.backend.standardize_dtype(
        partner_index.dtype if is_tensor(partner_index) else np.asarray(partner_index).dtype
    )
    if "int" not in dtype:
        raise TypeError(
            "`partner_index` must hold integers, the index of each example's partner. "
            f"Received: partner_index of dtype {dtype}."
        )


def _check_per_example(name, values, batch, rest, low=None, high=None):
    """`values` of shape `(batch, *rest)`; when they are known, each in [low, high]."""
    shape = tensor_shape(name, values)
    if shape is not None:
        batch_differs = None not in (batch, shape[0]) and shape[0] != batch
        if batch_differs or tuple(shape[1:]) != rest:
            raise ValueError(
                f"`{name}` must have shape {(batch, *rest)}, one row per example of `images`. "
                f"Received: {name} of shape {shape}."
            )
    known = _known_values(values)
    if known is None or low is None:
        return
    inside = np.isfinite(known) & (known >= low)
    if high is not None:
        inside &= known <= high
    if not inside.all():
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(
            f"`{name}` must hold values in {bounds}. Received: {name}={shown(known.tolist())}."
        )


def _batch_size(shape):
    return None if shape is None else shape[0]


def _known_values(values):
    """The values of numpy or Python input as an array, else None (a tensor, maybe traced)."""
    if isinstance(values, (np.ndarray, np.generic, list, tuple)):
        return np.asarray(values)
    return None
