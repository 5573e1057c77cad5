"""Pictures for `snakemake --report`: training curves, confusion matrix, accuracy table, step run times.

One function per picture, each reading the workflow's own files and writing one PNG atomically
(matplotlib's Agg backend: no display needed).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .io import atomic_path, read_json
from .summary import read_train_metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, output) -> Path:
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return Path(output)


def plot_curves(metrics_jsonl, output) -> Path:
    """Loss (train and val), learning rate and val top-1/top-5 per epoch."""
    records = read_train_metrics(metrics_jsonl)
    if not records:
        raise ValueError(f"{metrics_jsonl}: no epoch records")
    missing = [k for k in ("epoch", "train_loss", "lr") if any(k not in r for r in records)]
    if missing:
        raise ValueError(f"{metrics_jsonl}: records lack key(s) {', '.join(missing)} "
                         f"(expected epoch, train_loss, lr, val_top1, val_top5, val_loss)")

    def series(key):
        return [r.get(key) if r.get(key) is not None else np.nan for r in records]

    epochs = series("epoch")
    plt = _pyplot()
    fig, (ax_loss, ax_lr, ax_acc) = plt.subplots(1, 3, figsize=(13, 3.6))
    ax_loss.plot(epochs, series("train_loss"), marker="o", label="train")
    ax_loss.plot(epochs, series("val_loss"), marker="o", label="val")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_loss.legend()
    ax_lr.plot(epochs, series("lr"), marker="o", color="tab:purple")
    ax_lr.set(title="learning rate", xlabel="epoch")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_acc.plot(epochs, series("val_top1"), marker="o", label="top-1")
    ax_acc.plot(epochs, series("val_top5"), marker="o", label="top-5")
    title = "val accuracy"
    chosen = records[-1].get("final_epoch")
    if chosen is not None:  # which weights left training (final_weights)
        ax_acc.axvline(chosen, color="tab:green", linestyle="--", label=f"final ({records[-1]['final_weights']})")
        title += f"\nfinal weights: {records[-1]['final_weights']}, epoch {chosen}"
    ax_acc.set(title=title, xlabel="epoch", ylim=(0, 1.02))
    ax_acc.legend()
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_lr, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, output)


def plot_confusion(eval_metrics, output) -> Path:
    """Row-normalised confusion matrix (rows: true class) with counts when there are few classes."""
    metrics = read_json(eval_metrics, "evaluation metrics", ("confusion_matrix", "class_names"))
    matrix = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    names = list(metrics["class_names"])
    if matrix.ndim != 2 or matrix.shape != (len(names), len(names)):
        raise ValueError(f"{eval_metrics}: confusion_matrix is {matrix.shape}, expected "
                         f"({len(names)}, {len(names)}) for {len(names)} class_names")
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    plt = _pyplot()
    side = min(12.0, 3.0 + 0.45 * len(names))
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    if len(names) <= 30:
        ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 12 else 0)
        ax.set_yticks(range(len(names)), names)
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, int(count), ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"confusion matrix ({int(matrix.sum())} images, top-1 {metrics.get('top1', float('nan')):.4f})")
    return _save(fig, output)


def accuracy_rows(inputs) -> list[dict]:
    """Rows from summary.json, or from the pair eval/metrics.json + infer/accuracy.json."""
    from .summary import EVAL_KEYS, INFER_KEYS, accuracy_rows as rows_of

    if len(inputs) == 1:
        return read_json(inputs[0], "run summary", ("accuracy",))["accuracy"]
    if len(inputs) == 2:
        evaluated = read_json(inputs[0], "evaluation metrics", EVAL_KEYS)
        deployed = read_json(inputs[1], "deployed-model accuracy", INFER_KEYS)
        return rows_of(evaluated, inputs[0], {"MINDIR": deployed})
    raise ValueError(f"accuracy plot: expected summary.json or eval/metrics.json + infer/accuracy.json, "
                     f"got {len(inputs)} inputs")


def _latency_cell(row: dict) -> str:
    """A deployed row's mean ms per image and what ran it; '-' for the evaluation (not timed per image)."""
    if "ms_per_image" not in row:
        return "-"
    runtime = f"\n{row['runtime']}" if row.get("runtime") else ""
    return f"{row['ms_per_image']:.2f} (batch {row['batch_size']}){runtime}"


def plot_accuracy(inputs, output) -> Path:
    """The eval-vs-deployed accuracy table as a picture: one row per deployed target, with its latency."""
    rows = accuracy_rows(inputs)
    plt = _pyplot()
    timed = any("ms_per_image" in r for r in rows)
    fig, ax = plt.subplots(figsize=(10.5 if timed else 7.5, 0.5 + (0.6 if timed else 0.45) * (len(rows) + 1)))
    ax.axis("off")
    labels = ["model", "top-1", "top-5", "top-1 correct", "top-5 correct"] + (["ms/image"] if timed else [])
    cells = [[r["model"], f"{r['top1']:.4f}", f"{r['top5']:.4f}", f"{r['correct_top1']} / {r['num_images']}",
              f"{r['correct_top5']} / {r['num_images']}"] + ([_latency_cell(r)] if timed else []) for r in rows]
    table = ax.table(cellText=cells, colLabels=labels, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1, 2.2 if timed else 1.6)
    if timed:
        table.auto_set_column_width(list(range(len(labels))))
    same = len({(r["num_images"], r["correct_top1"], r["correct_top5"]) for r in rows}) == 1
    ax.set_title("eval vs deployed model: " + ("identical counts" if same else "DIFFERENT counts"),
                 color="green" if same else "red")
    weights = read_json(inputs[0], "run summary").get("weights") if len(inputs) == 1 else None
    if weights:  # where the deployed weights came from, under the table
        ax.text(0.5, -0.05, f"weights: {weights['path']} ({weights.get('origin', '')}), sha256 "
                f"{weights['sha256'][:16]}...", ha="center", va="top", fontsize=8, transform=ax.transAxes)
    return _save(fig, output)


def read_benchmark(path) -> dict:
    """First data row of a Snakemake benchmark TSV (columns s, h:m:s, max_rss, ...)."""
    path = Path(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError(f"{path}: not a Snakemake benchmark TSV (expected a header with column 's' and a row)")

    def number(key):
        try:
            return float(rows[0].get(key, "nan"))
        except ValueError:  # Snakemake writes '-' for values it could not measure
            return float("nan")

    return {"step": path.stem, "seconds": number("s"), "max_rss_mb": number("max_rss")}


def plot_benchmarks(tsv_paths, output) -> Path:
    """Wall time (and peak memory) per workflow step."""
    if not tsv_paths:
        raise ValueError("benchmarks plot: no benchmark TSV files given")
    rows = [read_benchmark(p) for p in tsv_paths]
    steps = [r["step"] for r in rows]
    plt = _pyplot()
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 0.6 + 0.4 * len(rows)), sharey=True)
    ax_t.barh(steps, [r["seconds"] for r in rows], color="tab:blue")
    ax_t.set(xlabel="wall time (s)", title="time per step")
    ax_m.barh(steps, [r["max_rss_mb"] for r in rows], color="tab:orange")
    ax_m.set(xlabel="peak RSS (MB)", title="memory per step")
    ax_t.invert_yaxis()
    for ax, key, fmt in ((ax_t, "seconds", "{:.1f}"), (ax_m, "max_rss_mb", "{:.0f}")):
        for i, r in enumerate(rows):
            if not np.isnan(r[key]):
                ax.text(r[key], i, " " + fmt.format(r[key]), va="center", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, output)


KINDS = {
    "curves": lambda inputs, out: plot_curves(_one(inputs, "curves", "metrics.jsonl"), out),
    "confusion": lambda inputs, out: plot_confusion(_one(inputs, "confusion", "eval/metrics.json"), out),
    "accuracy": plot_accuracy,
    "benchmarks": plot_benchmarks,
}


def _one(inputs, kind, what):
    if len(inputs) != 1:
        raise ValueError(f"--kind {kind}: expected one input ({what}), got {len(inputs)}")
    return inputs[0]


def plot(kind: str, inputs, output) -> Path:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    missing = [p for p in inputs if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"--kind {kind}: input file(s) not found: {', '.join(map(str, missing))}")
    return KINDS[kind](list(inputs), output)
