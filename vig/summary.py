"""The run's summary and its parity gate.

Every deployed model (each deploy target: the exported MINDIR, the ONNX model, run on the same 310-format
.bin inputs) must classify the evaluation's images as the in-framework evaluation did: per image the same
label, the same top-1 class and the same set of top-5 classes (vig/predictions.py). Anything else means
export, preprocessing or inference changed the model, and the run fails naming the target and the first
differing images with both sides' top-1 margins.

One exception, because ViG's kNN is discontinuous: a neighbour whose distance ties another's to ~1e-7
flips with any change of rounding, so two correct runtimes can differ by a little in an image's logits,
and where two classes tie that closely, in its decision. The evaluation measures how far its own top-k
logits move when its input moves by one rounding step ("rounding_sensitivity" in its predictions file);
an image whose decision differs passes as a near-tie only if both records could come from logits that
differ by at most the tolerance, twice that sensitivity (each runtime may be that far from the other's
rounding) and at least 1e-4 of the largest logit: every class both list within the tolerance, and a
class one side lists no more than the tolerance above the other side's k-th logit. Near-ties are
counted and named in the summary, and the correct counts may then differ by exactly what those images
change. An evaluation file without a sensitivity (older runs) gets the exact gate. A deployed model that
computes something else moves the logits of its differing images by far more than that. The sampled
sensitivity can miss the largest flips of a big validation set: a failed gate lists what tolerance each
differing image needs, and deploy.parity_tolerance (summary.py --near_tie_tolerance) sets it explicitly.
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


def check_counts(rows: list[dict], near_tie_changes: list[dict] | None = None) -> None:
    """Every deployed row has the evaluation's image count, and its top-1/top-5 correct counts are the
    evaluation's plus what its near-tie images change (one {"correct_top1": d, ...} per deployed row)."""
    keys = ("num_images", "correct_top1", "correct_top5")
    evaluated, *deployed = rows
    for row, change in zip(deployed, near_tie_changes or [{}] * len(deployed)):
        differing = [k for k in keys if evaluated[k] + change.get(k, 0) != row[k]]
        if differing:
            detail = "; ".join(f"{k}: eval {evaluated[k]}" + (f" {change[k]:+d} by near-ties" if change.get(k) else "")
                               + f" vs deployed {row[k]}" for k in differing)
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


def listing(names: list[str]) -> str:
    """The first SHOWN_DIFFERENCES names, and how many there are when that is not all."""
    shown = ", ".join(names[:SHOWN_DIFFERENCES])
    return shown + (f", ... ({len(names)} in all)" if len(names) > SHOWN_DIFFERENCES else "")


def gate_tolerance(reference: dict[str, dict], sensitivity: float | None) -> float:
    """How far two correct runtimes' logits may differ (module docstring); 0 without a sensitivity."""
    if sensitivity is None:
        return 0.0
    scale = max((abs(v) for record in reference.values() for v in record["logits"]), default=0.0)
    return max(2.0 * sensitivity, 1e-4 * scale)


def needed_tolerance(ours: dict, theirs: dict) -> float:
    """The smallest per-class logit difference two logit vectors could have and give these two records
    (top-k classes and logits): a class only one side lists scores at most the other side's k-th logit."""
    a, b = dict(zip(ours["top"], ours["logits"])), dict(zip(theirs["top"], theirs["logits"]))
    a_floor, b_floor = min(ours["logits"]), min(theirs["logits"])
    return max([0.0] + [abs(a[c] - b[c]) if c in a and c in b else (a[c] - b_floor if c in a else b[c] - a_floor)
                        for c in a.keys() | b.keys()])


def within_tolerance(ours: dict, theirs: dict, tolerance: float) -> bool:
    """Could the two records come from logit vectors that differ by at most `tolerance` per class?"""
    return needed_tolerance(ours, theirs) <= tolerance


def correct(record: dict) -> dict:
    return {"correct_top1": int(record["top"][0] == record["label"]),
            "correct_top5": int(record["label"] in record["top"])}


def check_images(reference: dict[str, dict], deployed: dict[str, dict], target: str,
                 tolerance: float = 0.0) -> dict[str, dict]:
    """Raise ParityError unless `deployed` has exactly the evaluation's images, and for each the same label,
    top-1 class and top-k set, or (a near-tie) the same label and records within `tolerance`
    (within_tolerance). Returns {near-tie image: how it changes the correct counts (deployed - eval)}."""
    only_eval = [image for image in reference if image not in deployed]
    only_deployed = [image for image in deployed if image not in reference]
    if only_eval or only_deployed:
        lines = [f"only in the evaluation: {listing(only_eval)}"] if only_eval else []
        lines += [f"only in {target}: {listing(only_deployed)}"] if only_deployed else []
        raise ParityError(f"parity gate FAILED for deployed target {target}: not the evaluation's images "
                          f"({len(reference)} evaluated, {len(deployed)} deployed)\n  " + "\n  ".join(lines))
    differing, near_ties = [], {}
    for image, ours in reference.items():
        what = _differences(ours, deployed[image])
        if what and "label" not in what and tolerance > 0 and within_tolerance(ours, deployed[image], tolerance):
            before = correct(ours)
            near_ties[image] = {k: v - before[k] for k, v in correct(deployed[image]).items()}
        elif what:
            differing.append((image, what))
    if not differing:
        return near_ties
    counts = Counter(item for _, what in differing for item in what)
    header = (f"{'image':<24}{'label eval/' + target:<22}{'eval top classes (margin)':<44}"
              f"{target + ' top classes (margin)':<44}{'needs':<10}differs in")
    lines = [header]
    for image, what in differing[:SHOWN_DIFFERENCES]:
        ours, theirs = reference[image], deployed[image]
        lines.append(f"{image:<24}{str(ours['label']) + '/' + str(theirs['label']):<22}{_prediction(ours):<44}"
                     f"{_prediction(theirs):<44}{needed_tolerance(ours, theirs):<10.4g}{', '.join(what)}")
    raise ParityError(
        f"parity gate FAILED for deployed target {target}: {len(differing)} of {len(reference)} images differ from "
        f"the evaluation ({', '.join(f'{k}: {v}' for k, v in counts.items())}); the first "
        f"{min(len(differing), SHOWN_DIFFERENCES)} (margin = top-1 logit minus the runner-up's; "
        f"{_tolerance_note(tolerance, len(near_ties))}):\n  " + "\n  ".join(lines))


def _tolerance_note(tolerance: float, near_ties: int) -> str:
    needs = ("needs = the near-tie tolerance that would pass the image (deploy.parity_tolerance; only for "
             "kNN near-ties: small against the margins)")
    if tolerance <= 0:
        return ("no near-tie tolerance (the evaluation recorded no rounding sensitivity): a margin near 0 is a "
                f"tie that rounding can flip, large on both sides means the deployed model computes something "
                f"else; {needs}")
    return f"these need more than the near-tie tolerance {tolerance:.4g}; {near_ties} other image(s) passed as near-ties; {needs}"


def count_changes(near_ties: dict[str, dict]) -> dict:
    """The near-tie images' total change of each correct count."""
    return {k: sum(change[k] for change in near_ties.values()) for k in ("correct_top1", "correct_top5")}


def build_summary(eval_path, eval_predictions_path, targets: list[DeployedTarget],
                  train_metrics_path=None, tolerance: float | None = None) -> dict:
    """Read the step outputs, enforce parity for every deployed target (raises ParityError naming the
    first failing one), return the summary: one accuracy row per target, with its latency. `tolerance`:
    the near-tie tolerance (default: gate_tolerance of the evaluation's rounding sensitivity)."""
    if not targets:
        raise ValueError("no deployed target to check (expected at least one: name, accuracy, predictions, "
                         "latency)")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"deployed targets {names}: each name may occur once")
    eval_metrics = read_json(eval_path, "evaluation metrics", EVAL_KEYS)
    reference, sensitivity = read_predictions(eval_predictions_path, "evaluation predictions")
    if len(reference) != eval_metrics["num_images"]:
        raise ValueError(f"{eval_predictions_path}: {len(reference)} images, but {eval_path} counts "
                         f"{eval_metrics['num_images']} (expected both from the same evaluation)")
    latency = {t.name: read_json(t.latency, f"{t.name} inference latency", LATENCY_KEYS) for t in targets}
    deployed = {t.name: read_json(t.accuracy, f"{t.name} accuracy", INFER_KEYS) for t in targets}
    rows = accuracy_rows(eval_metrics, eval_path, deployed, latency)
    if tolerance is None:
        tolerance = gate_tolerance(reference, sensitivity)
    elif not tolerance >= 0:
        raise ValueError(f"near-tie tolerance {tolerance}: expected a number >= 0")
    near_ties = {t.name: check_images(reference, read_predictions(t.predictions, f"{t.name} predictions")[0],
                                      t.name, tolerance) for t in targets}
    check_counts(rows, [count_changes(near_ties[t.name]) for t in targets])  # rows: eval, then the targets
    summary = {"parity": "passed", "accuracy": rows, "images_compared": {t.name: len(reference) for t in targets},
               "near_ties": {name: sorted(images) for name, images in near_ties.items()},
               "rounding_sensitivity": sensitivity, "near_tie_tolerance": tolerance,
               "latency": {name: {k: stats.get(k) for k in LATENCY_KEYS + ("runtime",)}
                           for name, stats in latency.items()}}
    if train_metrics_path:
        records = read_train_metrics(train_metrics_path)
        if records:
            summary["training"] = {"epochs": len(records), "final": records[-1],
                                   "final_weights": records[-1].get("final_weights"),
                                   "final_epoch": records[-1].get("final_epoch")}
    return summary
