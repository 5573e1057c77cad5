"""Per-image transforms: the one eval transform, and the training chain of the seed (timm semantics).

Everything random takes an explicit numpy Generator, so a sample's augmentation depends only on the
seed it is given, never on process history or on which worker runs it.
"""
import math

import numpy as np
from PIL import Image

from .rand_augment import RandAugment

PIL_INTERPOLATION = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
ERASE_AREA = (0.02, 1.0 / 3.0)  # fraction of the image per erasing call
ERASE_MIN_ASPECT = 0.3
ERASE_ATTEMPTS = 10


def load_rgb(path):
    """Decode an image file to a PIL RGB image; the error names the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as err:  # PIL raises several unrelated types for bad files
        raise RuntimeError(f"cannot decode image file {path}: {err}") from err


def _as_pil(img):
    if isinstance(img, Image.Image):
        return img.convert("RGB") if img.mode != "RGB" else img
    array = np.asarray(img)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a PIL image or an HWC uint8 RGB array, got {array.dtype} {array.shape}")
    return Image.fromarray(array)


def to_normalized_chw(img, mean, std):
    """PIL RGB -> float32 CHW, (x / 255 - mean) / std per channel."""
    hwc = np.asarray(img)
    chw = np.empty((3,) + hwc.shape[:2], dtype=np.float32)
    for c in range(3):  # channel by channel: ~10x faster than a broadcast over a transposed view
        np.multiply(hwc[:, :, c], np.float32(1.0 / (255.0 * std[c])), out=chw[c])
        chw[c] -= np.float32(mean[c] / std[c])
    return chw


def fill_colour(mean):
    """timm's RandAugment fill: the dataset mean in 0-255 ((124, 116, 104) for ImageNet)."""
    return tuple(min(255, round(255 * m)) for m in mean)


class EvalTransform:
    """Resize the short side to int(image_size / crop_pct), centre-crop image_size, normalise, CHW float32.

    Works on a PIL image or an HWC uint8 RGB array, eagerly or inside a dataset map.
    """

    def __init__(self, image_size, crop_pct, mean, std, interpolation="bicubic"):
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size = {image_size!r}: expected a positive integer")
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct = {crop_pct!r}: expected a number in (0, 1]")
        if interpolation not in PIL_INTERPOLATION:
            raise ValueError(f"interpolation = {interpolation!r}: expected one of {', '.join(PIL_INTERPOLATION)}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean = {mean!r}, std = {std!r}: expected 3 numbers each, std > 0")
        self.image_size = image_size
        self.resize_to = int(image_size / crop_pct)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation

    def resized_size(self, width, height):
        """(w, h) after the short side goes to `resize_to`, keeping the aspect ratio (torchvision rule)."""
        if width <= height:
            return self.resize_to, int(self.resize_to * height / width)
        return int(self.resize_to * width / height), self.resize_to

    def __call__(self, img):
        img = _as_pil(img)
        width, height = self.resized_size(*img.size)
        img = img.resize((width, height), PIL_INTERPOLATION[self.interpolation])
        left = int(round((width - self.image_size) / 2.0))
        top = int(round((height - self.image_size) / 2.0))
        img = img.crop((left, top, left + self.image_size, top + self.image_size))
        return to_normalized_chw(img, self.mean, self.std)


def eval_transforms(image_size, crop_pct, mean, std, interpolation="bicubic"):
    """THE evaluation transform (training-time validation, evaluate.py and export preprocessing)."""
    return EvalTransform(image_size, crop_pct, mean, std, interpolation)


def random_resized_crop_box(width, height, rng, scale=CROP_SCALE, ratio=CROP_RATIO):
    """(left, top, w, h) of a crop covering scale[0..1] of the area with log-uniform aspect (torchvision)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    # fallback: the largest centre crop with an allowed aspect ratio
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def random_erase(chw, rng, prob, mode, max_count):
    """timm RandomErasing on a normalised CHW float32 array, in place; returns the number of boxes.

    With probability `prob`, erase 1..max_count boxes (together up to ERASE_AREA of the image) with
    per-pixel N(0,1) noise ('pixel'), one N(0,1) colour per box ('rand') or zeros ('const').
    """
    if rng.random() >= prob:
        return 0
    channels, height, width = chw.shape
    count = 1 if max_count == 1 else int(rng.integers(1, max_count + 1))
    log_aspect = (math.log(ERASE_MIN_ASPECT), math.log(1.0 / ERASE_MIN_ASPECT))
    erased = 0
    for _ in range(count):
        for _ in range(ERASE_ATTEMPTS):
            target_area = rng.uniform(*ERASE_AREA) * height * width / count
            aspect = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < width and h < height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                chw[:, top:top + h, left:left + w] = _erase_values(rng, mode, (channels, h, w))
                erased += 1
                break
    return erased


def _erase_values(rng, mode, shape):
    if mode == "pixel":
        return rng.standard_normal(shape, dtype=np.float32)
    if mode == "rand":
        return rng.standard_normal((shape[0], 1, 1), dtype=np.float32)
    return np.zeros((shape[0], 1, 1), dtype=np.float32)


class TrainTransform:
    """The seed's per-image training chain: RandomResizedCrop, h-flip, RandAugment, normalise, erasing."""

    def __init__(self, dcfg):
        self.image_size = dcfg["image_size"]
        self.resample = PIL_INTERPOLATION[dcfg["interpolation"]]
        self.mean, self.std = dcfg["mean"], dcfg["std"]
        spec = dcfg["rand_augment"]
        self.rand_augment = RandAugment(spec, fill_colour(self.mean), self.resample) if spec else None
        self.re_prob, self.re_mode, self.re_count = dcfg["re_prob"], dcfg["re_mode"], dcfg["re_count"]

    def __call__(self, img, rng):
        left, top, w, h = random_resized_crop_box(img.size[0], img.size[1], rng)
        size = (self.image_size, self.image_size)
        img = img.resize(size, self.resample, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.rand_augment is not None:
            img = self.rand_augment(img, rng)
        chw = to_normalized_chw(img, self.mean, self.std)
        if self.re_prob > 0:
            random_erase(chw, rng, self.re_prob, self.re_mode, self.re_count)
        return chw
