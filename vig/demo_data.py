"""The embedded demo dataset: scikit-learn's handwritten digits as an ImageNet-format folder.

`load_digits` ships 1,797 real 8x8 grey images (values 0..16) of the digits 0-9 with the library, so
the demo needs no download. They are upscaled (bicubic) to RGB JPEGs in `train/<digit>/` and
`val/<digit>/` with a stratified split that depends only on the seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .io import atomic_dir, write_json

CLASS_NAMES = tuple(str(d) for d in range(10))
JPEG_QUALITY = 95


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class contributes round(n_c * val_fraction) images to val."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: expected a number strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(len(members) * val_fraction))
        if n_val == 0 or n_val == len(members):
            raise ValueError(f"val_fraction={val_fraction} leaves class {label} with an empty train or val split "
                             f"({len(members)} images)")
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.array(train)), np.sort(np.array(val))


def digit_to_rgb(image: np.ndarray, image_size: int) -> Image.Image:
    """An 8x8 array with values 0..16 -> an RGB image of image_size x image_size (bicubic)."""
    grey = np.clip(np.round(image * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    img = Image.fromarray(grey)  # uint8 2-D -> mode "L"
    return img.resize((image_size, image_size), Image.BICUBIC).convert("RGB")


def build_demo_dataset(output: str | Path, image_size: int = 32, val_fraction: float = 0.2, seed: int = 0,
                       log=print) -> dict:
    """Write the demo folder atomically and return a summary (counts per split and class)."""
    from sklearn.datasets import load_digits

    if image_size < 8:
        raise ValueError(f"image_size={image_size}: expected at least 8 (the digits are 8x8)")
    if sorted(CLASS_NAMES) != list(CLASS_NAMES):
        raise AssertionError("class folder names must sort in digit order (class index = sorted position)")
    digits = load_digits()
    images, labels = digits.images, digits.target
    splits = dict(zip(("train", "val"), stratified_split(labels, val_fraction, seed)))
    counts = {split: {name: 0 for name in CLASS_NAMES} for split in splits}
    with atomic_dir(output) as tmp:
        for split, indices in splits.items():
            for name in CLASS_NAMES:
                (tmp / split / name).mkdir(parents=True)
            for done, i in enumerate(indices, 1):
                name = CLASS_NAMES[labels[i]]
                # the dataset index makes every file name unique across classes and splits
                digit_to_rgb(images[i], image_size).save(tmp / split / name / f"digit_{i:04d}.JPEG",
                                                         format="JPEG", quality=JPEG_QUALITY)
                counts[split][name] += 1
                if done % 500 == 0 or done == len(indices):
                    log(f"[demo] {split}: {done}/{len(indices)} images written")
        summary = {"source": "sklearn.datasets.load_digits", "image_size": image_size,
                   "val_fraction": val_fraction, "seed": seed, "classes": list(CLASS_NAMES), "counts": counts}
        # at the root, outside the split folders, so no reader takes it for an image
        write_json(tmp / "demo_dataset.json", summary)
    log(f"[demo] wrote {output}: train {len(splits['train'])}, val {len(splits['val'])} images, "
        f"{len(CLASS_NAMES)} classes, {image_size}x{image_size}")
    return summary
