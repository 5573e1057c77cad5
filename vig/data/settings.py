"""The data keys of the seed's YAML, their defaults, and validation of the values this package uses.

`cfg` is the whole training config (a plain dict); keys that are not about data are ignored here.
"""
import math
import os

from ..config import DEFAULTS as CONFIG_DEFAULTS
from .rand_augment import parse_rand_augment

# The data keys of the one table of seed defaults (vig/config.py): image_size, augmentation,
# mixup, smoothing, workers, and eval crop_pct 0.875 with ImageNet mean/std (the seed resizes 256 for
# 224). `interpolation` drives the crop, RandAugment and the eval resize alike (the seed hard-codes
# bicubic for the first and last).
DATA_KEYS = ("image_size", "auto_augment", "interpolation", "re_prob", "re_mode", "re_count", "mix_up", "cutmix",
             "mixup_prob", "switch_prob", "mixup_mode", "label_smoothing", "num_classes", "num_parallel_workers",
             "crop_pct", "mean", "std")
DEFAULTS = {key: tuple(CONFIG_DEFAULTS[key]) if isinstance(CONFIG_DEFAULTS[key], list) else CONFIG_DEFAULTS[key]
            for key in DATA_KEYS}

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
ERASE_MODES = ("pixel", "const", "rand")
MIXUP_MODES = ("batch",)  # timm's "pair"/"elem" draw a lambda per sample; not implemented


def _number(cfg, key, low, high, integer=False, low_open=False):
    value = cfg[key]
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise ValueError(f"data config key '{key}' = {value!r}: expected {kind} in "
                         f"{'(' if low_open else '['}{low}, {high}]")
    if value < low or value > high or (low_open and value == low):
        raise ValueError(f"data config key '{key}' = {value!r} is out of range: expected "
                         f"{'(' if low_open else '['}{low}, {high}]")
    return value


def _choice(cfg, key, allowed):
    value = cfg[key]
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"data config key '{key}' = {value!r}: expected one of {', '.join(allowed)}")
    return value.lower()


def _triple(cfg, key, positive):
    value = cfg[key]
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3 or not all(math.isfinite(v) for v in triple) or (positive and min(triple) <= 0):
        what = "3 positive numbers" if positive else "3 numbers"
        raise ValueError(f"data config key '{key}' = {value!r}: expected {what} (one per RGB channel)")
    return triple


def data_config(cfg=None):
    """Seed defaults overlaid with `cfg`, checked and normalised; raises ValueError naming the bad key."""
    if cfg is not None and not isinstance(cfg, dict):
        raise TypeError(f"data config must be a dict, got {type(cfg).__name__}")
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in (cfg or {}).items() if k in DEFAULTS})
    merged["image_size"] = _number(merged, "image_size", 8, 4096, integer=True)
    merged["num_classes"] = _number(merged, "num_classes", 1, 10**7, integer=True)
    merged["num_parallel_workers"] = _number(merged, "num_parallel_workers", 1, 1024, integer=True)
    merged["re_count"] = _number(merged, "re_count", 1, 100, integer=True)
    for key in ("re_prob", "mixup_prob", "switch_prob"):
        merged[key] = float(_number(merged, key, 0.0, 1.0))
    merged["label_smoothing"] = float(_number(merged, "label_smoothing", 0.0, 1.0))
    for key in ("mix_up", "cutmix"):
        merged[key] = float(_number(merged, key, 0.0, 1e6))
    merged["crop_pct"] = float(_number(merged, "crop_pct", 0.0, 1.0, low_open=True))
    merged["interpolation"] = _choice(merged, "interpolation", INTERPOLATIONS)
    merged["re_mode"] = _choice(merged, "re_mode", ERASE_MODES)
    merged["mixup_mode"] = _choice(merged, "mixup_mode", MIXUP_MODES)
    merged["mean"] = _triple(merged, "mean", positive=False)
    merged["std"] = _triple(merged, "std", positive=True)
    # parsed now so a bad string fails before any image is read; None means no RandAugment
    merged["rand_augment"] = parse_rand_augment(merged["auto_augment"])
    return merged


def mixup_active(dcfg):
    return dcfg["mix_up"] > 0 or dcfg["cutmix"] > 0


def effective_workers(requested):
    """MindSpore rejects more workers than CPUs; results never depend on the worker count."""
    return max(1, min(int(requested), os.cpu_count() or 1))
