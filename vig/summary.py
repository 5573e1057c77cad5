"""The run's summary and its parity gate.

The deployed model (exported MINDIR on the 310-format .bin inputs) must classify the same images
exactly as the in-framework evaluation did: same image count, same top-1 and top-5 correct counts.
Anything else means export, preprocessing or inference changed the model, and the run fails.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .io import read_json

EVAL_KEYS = ("top1", "top5", "num_images")
INFER_KEYS = ("top1", "top5", "num_images", "correct_top1", "correct_top5")
LATENCY_KEYS = ("mean_ms", "p50_ms", "p90_ms", "images", "batch_size", "throughput_images_per_s")


class ParityError(RuntimeError):
    """The deployed model's accuracy differs from the evaluation's."""


def correct_count(metrics: dict, key: str, source) -> int:
    """Correct predictions behind an accuracy fraction (given directly when the file has them)."""
    if f"correct_{key}" in metrics:
        return int(metrics[f"correct_{key}"])
    exact = metrics[key] * metrics["num_images"]
    count = round(exact)
    if not math.isclose(exact, count, abs_tol=1e-3):
        raise ValueError(f"{source}: {key} = {metrics[key]} is not a whole number of the "
                         f"{metrics['num_images']} images (expected correct/num_images)")
    return int(count)


def read_train_metrics(path: str | os.PathLike) -> list[dict]:
    """metrics.jsonl: one JSON record per epoch; an unreadable line names its number."""
    path, records = Path(path), []
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training metrics (JSON lines) not found")
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON record: {exc}") from None
    return records


def accuracy_rows(eval_metrics: dict, deployed: dict, eval_source, deployed_source) -> list[dict]:
    return [
        {"model": "eval (in framework)", "top1": eval_metrics["top1"], "top5": eval_metrics["top5"],
         "correct_top1": correct_count(eval_metrics, "top1", eval_source),
         "correct_top5": correct_count(eval_metrics, "top5", eval_source), "num_images": eval_metrics["num_images"]},
        {"model": "deployed (MINDIR)", "top1": deployed["top1"], "top5": deployed["top5"],
         "correct_top1": int(deployed["correct_top1"]), "correct_top5": int(deployed["correct_top5"]),
         "num_images": deployed["num_images"]},
    ]


def format_table(rows: list[dict]) -> str:
    header = f"{'model':<22}{'top-1':>9}{'top-5':>9}{'images':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['model']:<22}{row['top1']:>9.4f}{row['top5']:>9.4f}{row['num_images']:>9d}")
    return "\n".join(lines)


def check_parity(rows: list[dict]) -> None:
    keys = ("num_images", "correct_top1", "correct_top5")
    evaluated, deployed = rows
    differing = [k for k in keys if evaluated[k] != deployed[k]]
    if differing:
        detail = "; ".join(f"{k}: eval {evaluated[k]} vs deployed {deployed[k]}" for k in differing)
        raise ParityError("parity gate FAILED: the deployed model does not reproduce the evaluation "
                          f"({detail})\n{format_table(rows)}")


def build_summary(eval_path, infer_path, latency_path, train_metrics_path=None) -> dict:
    """Read the step outputs, enforce parity, return the summary (raises ParityError on mismatch)."""
    eval_metrics = read_json(eval_path, "evaluation metrics", EVAL_KEYS)
    deployed = read_json(infer_path, "deployed-model accuracy", INFER_KEYS)
    latency = read_json(latency_path, "inference latency", LATENCY_KEYS)
    rows = accuracy_rows(eval_metrics, deployed, eval_path, infer_path)
    check_parity(rows)
    summary = {"parity": "passed", "accuracy": rows,
               "latency": {k: latency[k] for k in LATENCY_KEYS}}
    if train_metrics_path:
        records = read_train_metrics(train_metrics_path)
        if records:
            summary["training"] = {"epochs": len(records), "final": records[-1]}
    return summary
