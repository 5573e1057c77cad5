"""The run's summary and its parity gate.

Every deployed model (each deploy target: the exported MINDIR, the ONNX model, run on the same 310-format
.bin inputs) must classify every image
exactly as the in-framework evaluation did: the same images with the same labels, the same top-1 class
and the same set of top-5 classes per image (vig/predictions.py), hence also the same top-1 and top-5
correct counts. Anything else means export, preprocessing or inference changed the model, and the run
fails naming the target and the first differing images with both sides' top-1 margins (a margin near
zero is a near-tie that rounding can flip; a large one is a model that computes something else).
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .io import read_json
from .predictions import margin, read_predictions

EVAL_KEYS = ("top1", "top5", "num_images")
INFER_KEYS = ("top1", "top5", "num_images", "correct_top1", "correct_top5")
LATENCY_KEYS = ("mean_ms", "p50_ms", "p90_ms", "images", "batch_size", "throughput_images_per_s")


SHOWN_DIFFERENCES = 10  # differing images listed when the gate fails


class ParityError(RuntimeError):
    """A deployed model's predictions differ from the evaluation's."""


@dataclass(frozen=True)
class DeployedTarget:
    """One deployed model the gate checks: its accuracy (postprocess output), per-image predictions and
    inference latency (infer output)."""
    name: str
    accuracy: str | os.PathLike
    predictions: str | os.PathLike
    latency: str | os.PathLike


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


def eval_row(eval_metrics: dict, source) -> dict:
    return {"model": "eval (in framework)", "top1": eval_metrics["top1"], "top5": eval_metrics["top5"],
            "correct_top1": correct_count(eval_metrics, "top1", source),
            "correct_top5": correct_count(eval_metrics, "top5", source), "num_images": eval_metrics["num_images"]}


def deployed_row(name: str, deployed: dict, latency: dict | None = None) -> dict:
    """A deployed target's accuracy, with its mean latency per image and what ran it when known."""
    row = {"model": f"deployed ({name})", "top1": deployed["top1"], "top5": deployed["top5"],
           "correct_top1": int(deployed["correct_top1"]), "correct_top5": int(deployed["correct_top5"]),
           "num_images": deployed["num_images"]}
    if latency:
        row.update({"ms_per_image": latency["mean_ms"], "batch_size": latency["batch_size"],
                    "runtime": latency.get("runtime")})
    return row


def accuracy_rows(eval_metrics: dict, eval_source, deployed: dict[str, dict],
                  latency: dict[str, dict] | None = None) -> list[dict]:
    """The evaluation's row, then one per deployed target ({name: its accuracy file's contents}), with its
    latency ({name: its latency file's contents}) when given."""
    latency = latency or {}
    return [eval_row(eval_metrics, eval_source)] + [deployed_row(name, acc, latency.get(name))
                                                    for name, acc in deployed.items()]


def format_table(rows: list[dict]) -> str:
    header = f"{'model':<22}{'top-1':>9}{'top-5':>9}{'images':>9}{'ms/image':>10}  runtime"
    lines = [header, "-" * len(header)]
    for row in rows:
        speed = f"{row['ms_per_image']:>10.2f}  {row.get('runtime') or ''}" if "ms_per_image" in row else ""
        lines.append(f"{row['model']:<22}{row['top1']:>9.4f}{row['top5']:>9.4f}{row['num_images']:>9d}{speed}")
    return "\n".join(lines)


def check_counts(rows: list[dict]) -> None:
    """Every deployed row has the evaluation's image count and top-1/top-5 correct counts."""
    keys = ("num_images", "correct_top1", "correct_top5")
    evaluated, *deployed = rows
    for row in deployed:
        differing = [k for k in keys if evaluated[k] != row[k]]
        if differing:
            detail = "; ".join(f"{k}: eval {evaluated[k]} vs deployed {row[k]}" for k in differing)
            raise ParityError(f"parity gate FAILED for {row['model']}: it does not reproduce the evaluation "
                              f"({detail})\n{format_table(rows)}")


def _differences(ours: dict, theirs: dict) -> list[str]:
    k = len(ours["top"])
    checks = (("label", ours["label"] == theirs["label"]), ("top-1", ours["top"][0] == theirs["top"][0]),
              (f"top-{k} set", set(ours["top"]) == set(theirs["top"])))
    return [what for what, same in checks if not same]


def _prediction(record: dict) -> str:
    m = margin(record)
    return f"{record['top']} ({'-' if m is None else f'{m:.4g}'})"


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_DIFFERENCES])
    return shown + (f", ... ({len(names)} in all)" if len(names) > SHOWN_DIFFERENCES else "")


def check_images(reference: dict[str, dict], deployed: dict[str, dict], target: str) -> int:
    """Raise ParityError unless `deployed` has exactly the evaluation's images, and for each the same label,
    top-1 class and top-k set; return the number of images compared."""
    only_eval = [image for image in reference if image not in deployed]
    only_deployed = [image for image in deployed if image not in reference]
    if only_eval or only_deployed:
        lines = [f"only in the evaluation: {_listing(only_eval)}"] if only_eval else []
        lines += [f"only in {target}: {_listing(only_deployed)}"] if only_deployed else []
        raise ParityError(f"parity gate FAILED for deployed target {target}: not the evaluation's images "
                          f"({len(reference)} evaluated, {len(deployed)} deployed)\n  " + "\n  ".join(lines))
    differing = [(image, what) for image in reference if (what := _differences(reference[image], deployed[image]))]
    if not differing:
        return len(reference)
    counts = Counter(item for _, what in differing for item in what)
    header = (f"{'image':<24}{'label eval/' + target:<22}{'eval top classes (margin)':<44}"
              f"{target + ' top classes (margin)':<44}differs in")
    lines = [header]
    for image, what in differing[:SHOWN_DIFFERENCES]:
        ours, theirs = reference[image], deployed[image]
        lines.append(f"{image:<24}{str(ours['label']) + '/' + str(theirs['label']):<22}{_prediction(ours):<44}"
                     f"{_prediction(theirs):<44}{', '.join(what)}")
    raise ParityError(
        f"parity gate FAILED for deployed target {target}: {len(differing)} of {len(reference)} images differ from "
        f"the evaluation ({', '.join(f'{k}: {v}' for k, v in counts.items())}); the first "
        f"{min(len(differing), SHOWN_DIFFERENCES)} (margin = top-1 logit minus the runner-up's: near 0 is a "
        f"near-tie that rounding can flip, large on both sides means the deployed model computes something "
        f"else):\n  " + "\n  ".join(lines))


def build_summary(eval_path, eval_predictions_path, targets: list[DeployedTarget],
                  train_metrics_path=None) -> dict:
    """Read the step outputs, enforce parity for every deployed target (raises ParityError naming the
    first failing one), return the summary: one accuracy row per target, with its latency."""
    if not targets:
        raise ValueError("no deployed target to check (expected at least one: name, accuracy, predictions, "
                         "latency)")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"deployed targets {names}: each name may occur once")
    eval_metrics = read_json(eval_path, "evaluation metrics", EVAL_KEYS)
    reference = read_predictions(eval_predictions_path, "evaluation predictions")
    if len(reference) != eval_metrics["num_images"]:
        raise ValueError(f"{eval_predictions_path}: {len(reference)} images, but {eval_path} counts "
                         f"{eval_metrics['num_images']} (expected both from the same evaluation)")
    latency = {t.name: read_json(t.latency, f"{t.name} inference latency", LATENCY_KEYS) for t in targets}
    deployed = {t.name: read_json(t.accuracy, f"{t.name} accuracy", INFER_KEYS) for t in targets}
    rows = accuracy_rows(eval_metrics, eval_path, deployed, latency)
    compared = {t.name: check_images(reference, read_predictions(t.predictions, f"{t.name} predictions"), t.name)
                for t in targets}
    check_counts(rows)
    summary = {"parity": "passed", "accuracy": rows, "images_compared": compared,
               "latency": {name: {k: stats.get(k) for k in LATENCY_KEYS + ("runtime",)}
                           for name, stats in latency.items()}}
    if train_metrics_path:
        records = read_train_metrics(train_metrics_path)
        if records:
            summary["training"] = {"epochs": len(records), "final": records[-1],
                                   "final_weights": records[-1].get("final_weights"),
                                   "final_epoch": records[-1].get("final_epoch")}
    return summary
