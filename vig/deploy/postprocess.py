"""Accuracy of the deployed model from the seed's 310 result files.

`result_Files/<stem>_0.bin` holds the raw float32 logits of one image; the label file maps
`<file name with extension>` to a class index. Results and labels are matched by file stem, and every
result must have a label and every label a result (a silently skipped image would fake the accuracy).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

RESULT_SUFFIX = "_0.bin"


def load_labels(path: str | os.PathLike) -> dict[str, int]:
    """The seed's imagenet_label.json as {stem: class index}; names must be unique by stem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    with open(path) as fh:
        try:
            raw = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: label file is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected a non-empty JSON object {{\"<file name>\": <class index>}}")
    labels, problems = {}, []
    for name, index in raw.items():
        stem = os.path.splitext(name)[0]
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            problems.append(f"{name!r}: class index {index!r} is not a non-negative integer")
        elif stem in labels:
            problems.append(f"{name!r}: file stem {stem!r} occurs twice (results are keyed by stem)")
        else:
            labels[stem] = index
    if problems:
        raise ValueError(f"{path}: bad label entries:\n  " + "\n  ".join(problems))
    return labels


def load_results(result_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """{stem: float32 logits} for every `<stem>_0.bin`; other files (but hidden ones) are an error."""
    result_dir = Path(result_dir)
    if not result_dir.is_dir():
        raise FileNotFoundError(f"{result_dir}: result folder not found")
    results, problems = {}, []
    for name in sorted(os.listdir(result_dir)):
        if name.startswith("."):  # e.g. the .snakemake_timestamp Snakemake puts in folder outputs
            continue
        if not name.endswith(RESULT_SUFFIX):
            problems.append(f"{name}: not a result file (expected <stem>{RESULT_SUFFIX})")
            continue
        logits = np.fromfile(result_dir / name, dtype=np.float32)
        if logits.size == 0:
            problems.append(f"{name}: empty (expected num_classes float32 logits)")
        results[name[:-len(RESULT_SUFFIX)]] = logits
    sizes = sorted({v.size for v in results.values() if v.size})
    if len(sizes) > 1:
        problems.append(f"result files hold different numbers of logits: {sizes} (expected one class count)")
    if not results and not problems:
        problems.append("no result files")
    if problems:
        raise ValueError(f"{result_dir}: bad result files:\n  " + "\n  ".join(problems))
    return results


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per row: is the label among the k largest logits (k capped at the class count)."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def accuracy(result_dir: str | os.PathLike, label_file: str | os.PathLike) -> dict:
    """Top-1/top-5 over all results; raises if results and labels do not pair up one to one."""
    return score(result_dir, label_file)[0]


def score(result_dir: str | os.PathLike, label_file: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(accuracy as `accuracy` returns it, per-image records of vig.predictions in file-stem order)."""
    from ..predictions import records, top_k

    labels = load_labels(label_file)
    results = load_results(result_dir)
    no_label = sorted(set(results) - set(labels))
    no_result = sorted(set(labels) - set(results))
    if no_label or no_result:
        lines = [f"result without a label: {s}{RESULT_SUFFIX}" for s in no_label]
        lines += [f"label without a result: {s}" for s in no_result]
        raise ValueError(f"{result_dir} and {label_file} do not match ({len(no_label)} results without a label, "
                         f"{len(no_result)} labels without a result):\n  " + "\n  ".join(lines))
    stems = sorted(results)
    logits = np.stack([results[s] for s in stems])
    targets = np.array([labels[s] for s in stems])
    if targets.max() >= logits.shape[1]:
        bad = [s for s in stems if labels[s] >= logits.shape[1]]
        raise ValueError(f"{label_file}: class index >= {logits.shape[1]} (the number of logits) for {bad}")
    top1, top5 = topk_correct(logits, targets, 1), topk_correct(logits, targets, 5)
    n = len(stems)
    acc = {"top1": float(top1.sum() / n), "top5": float(top5.sum() / n), "num_images": n,
           "correct_top1": int(top1.sum()), "correct_top5": int(top5.sum()), "num_classes": int(logits.shape[1])}
    return acc, records(stems, targets, *top_k(logits))


def print_seed_form(acc: dict) -> None:
    """Exactly what the seed's postprocess.py prints (print with two arguments: two spaces)."""
    print("Top1 acc: ", acc["top1"])
    print("Top5 acc: ", acc["top5"])
