"""Batch-level Mixup/CutMix with label smoothing folded into soft targets (timm's `Mixup`, mode 'batch').

The partner of sample i is sample B-1-i (the batch flipped), one lambda per batch.
"""
from typing import NamedTuple, Optional, Tuple

import numpy as np


def smoothed_one_hot(labels, num_classes, smoothing):
    """(B,) int -> (B, C) float32 with off = smoothing / C and on = 1 - smoothing + smoothing / C."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    off = smoothing / num_classes
    targets = np.full((labels.size, num_classes), off, dtype=np.float32)
    targets[np.arange(labels.size), labels] = 1.0 - smoothing + off
    return targets


def cutmix_box(height, width, lam, rng):
    """A box of side sqrt(1 - lam) of the image at a uniform centre, clipped to the image.

    Returns ((top, bottom, left, right), lam corrected to 1 - clipped box area / image area).
    """
    cut_ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_ratio), int(width * cut_ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    box_area = (bottom - top) * (right - left)
    return (int(top), int(bottom), int(left), int(right)), 1.0 - box_area / float(height * width)


def _blend_with_flipped(images, lam):
    """lam * x[i] + (1 - lam) * x[B-1-i], one sample at a time to keep temporaries small."""
    mixed = np.empty_like(images)
    partner = np.empty_like(images[0])
    count = images.shape[0]
    for i in range(count):
        np.multiply(images[i], np.float32(lam), out=mixed[i])
        np.multiply(images[count - 1 - i], np.float32(1.0 - lam), out=partner)
        mixed[i] += partner
    return mixed


class MixResult(NamedTuple):
    images: np.ndarray
    targets: np.ndarray
    lam: float
    box: Optional[Tuple[int, int, int, int]]  # (top, bottom, left, right) when CutMix was used


class MixupCutmix:
    """Per batch: with prob `prob` mix; if both alphas > 0 CutMix with prob `switch_prob`, else Mixup."""

    def __init__(self, mixup_alpha, cutmix_alpha, prob, switch_prob, label_smoothing, num_classes):
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.label_smoothing, self.num_classes = float(label_smoothing), int(num_classes)

    @property
    def active(self):
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def draw(self, rng):
        """(lam, use_cutmix) for one batch; lam = 1 means no mixing."""
        if not self.active or rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def apply(self, images, labels, rng):
        """images (B, C, H, W) float32, labels (B,) int -> MixResult with (B, num_classes) float32 targets."""
        images = np.asarray(images, dtype=np.float32)
        if self.active and images.shape[0] % 2:
            raise ValueError(f"Mixup/CutMix needs an even batch size, got {images.shape[0]}")
        lam, use_cutmix = self.draw(rng)
        box = None
        if use_cutmix and lam < 1.0:
            box, lam = cutmix_box(images.shape[2], images.shape[3], lam, rng)
            top, bottom, left, right = box
            images = images.copy()
            images[:, :, top:bottom, left:right] = images[::-1, :, top:bottom, left:right].copy()
        elif lam < 1.0:
            images = _blend_with_flipped(images, lam)
        own = smoothed_one_hot(labels, self.num_classes, self.label_smoothing)
        targets = own if lam == 1.0 else (lam * own + (1.0 - lam) * own[::-1]).astype(np.float32)
        return MixResult(images, targets, lam, box)
