"""The data keys of the seed's YAML, their defaults, and validation of the values this package uses.

`cfg` is the whole training config (a plain dict); keys that are not about data are ignored here.
The limits and choices are the model schema's (vig/schema/model.schema.yaml): this module reads them,
so a dataset built without a validated config (tests, benches, the API) obeys the same ones.
"""
import math
import os

from ..config import DEFAULTS as CONFIG_DEFAULTS, key_rules
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


def _interval(rules):
    low = rules.get("minimum", rules.get("exclusiveMinimum", -math.inf))
    high = rules.get("maximum", rules.get("exclusiveMaximum", math.inf))
    return (f"{'(' if 'exclusiveMinimum' in rules else '['}{low}, "
            f"{high}{')' if 'exclusiveMaximum' in rules else ']'}"), low, high


def _number(cfg, key):
    """A number within the schema's bounds for `key` (the schema is the one place limits are written)."""
    rules = key_rules(key)
    value = cfg[key]
    integer = rules["type"] == "integer"
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    interval, low, high = _interval(rules)
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise ValueError(f"data config key '{key}' = {value!r}: expected {kind} in {interval}")
    if (value < low or value > high or ("exclusiveMinimum" in rules and value == low)
            or ("exclusiveMaximum" in rules and value == high)):
        raise ValueError(f"data config key '{key}' = {value!r} is out of range: expected {interval}")
    return value if integer else float(value)


def _choice(cfg, key):  # mixup_mode: timm's "pair"/"elem" draw a lambda per sample; not implemented
    allowed = key_rules(key)["enum"]
    value = cfg[key]
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"data config key '{key}' = {value!r}: expected one of {', '.join(allowed)}")
    return value.lower()


def _triple(cfg, key):
    positive = "exclusiveMinimum" in key_rules(key)["items"]
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
    for key in DATA_KEYS:  # checked as the schema types them; auto_augment is parsed below
        rules = key_rules(key)
        if "enum" in rules:
            merged[key] = _choice(merged, key)
        elif rules.get("type") in ("integer", "number"):
            merged[key] = _number(merged, key)
        elif rules.get("type") == "array":
            merged[key] = _triple(merged, key)
    # parsed now so a bad string fails before any image is read; None means no RandAugment
    merged["rand_augment"] = parse_rand_augment(merged["auto_augment"])
    return merged


def mixup_active(dcfg):
    return dcfg["mix_up"] > 0 or dcfg["cutmix"] > 0


def effective_workers(requested):
    """MindSpore rejects more workers than CPUs; results never depend on the worker count."""
    return max(1, min(int(requested), os.cpu_count() or 1))
