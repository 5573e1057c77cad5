"""Per-step learning-rate schedules of the seed (research/cv/ViG src/tools/schedulers.py semantics).

Every schedule is an array with one value per optimizer step, t = epoch + step / steps_per_epoch:
linear warmup from `warmup_lr` to `base_lr` over `warmup_length` epochs, then the policy, floored at
`min_lr`. With `lr_linear_scaling` the whole array (warmup and floor included, as in the seed) is
multiplied by global batch / 512.
"""
from __future__ import annotations

import math

import numpy as np

SCHEDULERS = ("cosine_lr", "constant_lr", "exp_lr", "multistep_lr")


def lr_at(cfg: dict, t: float) -> float:
    """Unscaled LR at fractional epoch t (before the min_lr floor)."""
    base, warm, W, E = cfg["base_lr"], cfg["warmup_lr"], cfg["warmup_length"], cfg["epochs"]
    if t < W:
        return warm + (t / W) * (base - warm)
    policy = cfg["lr_scheduler"]
    if policy == "cosine_lr":
        return 0.5 * (1.0 + math.cos(math.pi * (t - W) / max(E - W, 1e-12))) * base
    if policy == "constant_lr":
        return base
    if policy == "exp_lr":
        return base * cfg["lr_gamma"] ** int(t)
    if policy == "multistep_lr":
        return base * cfg["lr_gamma"] ** (int(t) // cfg["lr_adjust"])
    raise ValueError(f"lr_scheduler={policy!r}: expected one of {', '.join(SCHEDULERS)}")


def lr_scale(cfg: dict, world_size: int) -> float:
    """The seed's linear scaling rule: global batch / 512 (1 when lr_linear_scaling is off)."""
    if not cfg.get("lr_linear_scaling", True):
        return 1.0
    return cfg["batch_size"] * world_size * cfg.get("accumulation_step", 1) / 512.0


def build_lr_schedule(cfg: dict, steps_per_epoch: int, world_size: int = 1) -> np.ndarray:
    """float32 array of length epochs * steps_per_epoch: the LR of every optimizer step."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch={steps_per_epoch}: the training set yields no full batch")
    total = cfg["epochs"] * steps_per_epoch
    raw = np.array([lr_at(cfg, i / steps_per_epoch) for i in range(total)], dtype=np.float64)
    raw = np.clip(raw, cfg["min_lr"], max(raw.max(), cfg["min_lr"]))
    return (raw * lr_scale(cfg, world_size)).astype(np.float32)
