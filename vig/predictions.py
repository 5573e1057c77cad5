"""Per-image predictions: what the parity gate compares between the evaluation and a deployed model.

One JSON file per producer (evaluate.py --predictions, postprocess.py --predictions):

    {"source": "...", "k": 5, "images": [{"image": "<file stem>", "label": 3,
                                          "top": [3, 7, ...], "logits": [9.81, 4.02, ...]}, ...]}

`image` is the file stem, the key of the 310 chain (`<stem>.bin`, `result_Files/<stem>_0.bin`); `top` are
the k highest-scoring classes, best first, and `logits` their logits, so `logits[0] - logits[1]` is the
top-1 margin that tells a near-tie from a real disagreement. k = min(5, number of classes). The
evaluation's file also holds "rounding_sensitivity": how far the model's top-k logits moved when its
first batch's input values changed by one float32 rounding step (rounding_nudges), the yardstick of
the parity gate's near-ties (vig/summary.py).
Importing this module does not import MindSpore.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import read_json, write_json

TOPK = 5


def top_k(logits: np.ndarray, k: int = TOPK) -> tuple[np.ndarray, np.ndarray]:
    """(classes, logits) of the k largest logits per row, best first (ties: lower class first)."""
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(logits, order, axis=1)


def rounding_nudges(x: np.ndarray, trials: int = 3, seed: int = 0):
    """`trials` copies of `x` with every value moved by one float32 rounding step (2^-23 relative, random
    sign): inputs a correct model must treat as the same image. ViG's kNN is discontinuous (a neighbour
    whose distance ties another's to ~1e-7 flips with any change of rounding, and with it a feature), so
    how far such inputs move the logits is how far another runtime's rounding may move them."""
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        yield (x * (1 + rng.choice([-1.0, 1.0], x.shape) * 2.0 ** -23)).astype(np.float32)


def largest_move(forward, x: np.ndarray, base: np.ndarray, trials: int = 3, seed: int = 0) -> float:
    """How far `forward` (numpy in, numpy out) moves from `base`, its output for `x`, under the
    rounding_nudges of `x`: the largest absolute change over all outputs and trials."""
    return max(float(np.abs(forward(nudged) - base).max()) for nudged in rounding_nudges(x, trials, seed))


def records(images, labels, top_classes, top_logits) -> list[dict]:
    """One record per image, in the given order."""
    return [{"image": str(image), "label": int(label), "top": [int(c) for c in top],
             "logits": [float(v) for v in values]}
            for image, label, top, values in zip(images, labels, top_classes, top_logits)]


def write_predictions(path: str | os.PathLike, source: str, image_records: list[dict],
                      rounding_sensitivity: float | None = None) -> None:
    k = len(image_records[0]["top"]) if image_records else 0
    extra = {} if rounding_sensitivity is None else {"rounding_sensitivity": float(rounding_sensitivity)}
    write_json(path, {"source": source, "k": k, **extra, "images": image_records})


def read_predictions(path: str | os.PathLike, what: str) -> tuple[dict[str, dict], float | None]:
    """({image: record} in file order, the file's rounding_sensitivity or None); a malformed record or a
    repeated image names the file and the image."""
    raw = read_json(path, what, ("k", "images"))
    found, problems = {}, []
    for number, record in enumerate(raw["images"]):
        keys = ("image", "label", "top", "logits")
        if not isinstance(record, dict) or any(key not in record for key in keys):
            problems.append(f"entry {number}: expected an object with keys {', '.join(keys)}, got {record!r:.80}")
        elif len(record["top"]) != raw["k"] or len(record["logits"]) != raw["k"]:
            problems.append(f"{record['image']}: expected {raw['k']} classes and logits, got "
                            f"{len(record['top'])} and {len(record['logits'])}")
        elif record["image"] in found:
            problems.append(f"{record['image']}: listed twice (images are keyed by file stem; are two "
                            f"files named alike in different class folders?)")
        else:
            found[record["image"]] = record
        if len(problems) >= 10:
            break
    sensitivity = raw.get("rounding_sensitivity")
    if sensitivity is not None and not (isinstance(sensitivity, (int, float)) and sensitivity >= 0):
        problems.append(f"rounding_sensitivity = {sensitivity!r}: expected a number >= 0")
    if problems:
        raise ValueError(f"{Path(path)}: bad {what}:\n  " + "\n  ".join(problems))
    return found, sensitivity


def margin(record: dict) -> float | None:
    """Top-1 logit minus the runner-up's (None with a single class)."""
    values = record["logits"]
    return values[0] - values[1] if len(values) > 1 else None
