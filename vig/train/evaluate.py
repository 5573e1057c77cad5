"""Evaluation: top-1/top-5, loss, per-class accuracy and the confusion matrix over a sharded split,
with the counts summed across ranks so every image counts exactly once."""
from __future__ import annotations

import os
import time

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .loss import per_sample_cross_entropy


class _EvalForward(nn.Cell):
    """(images, labels) -> (per-sample loss, top-5 logits, top-5 class ids); one compiled graph for every batch
    (padded)."""

    def __init__(self, net, topk):
        super().__init__()
        self.net, self.topk = net, topk

    def construct(self, images, labels):
        logits = self.net(images).astype(ms.float32)
        values, classes = ops.topk(logits, self.topk)
        return per_sample_cross_entropy(logits, labels), values, classes


def eval_forward(net, num_classes: int) -> nn.Cell:
    return _EvalForward(net, min(5, num_classes))


class SumAcrossRanks(nn.Cell):
    def __init__(self):
        super().__init__()
        self.all_reduce = ops.AllReduce()

    def construct(self, x):
        return self.all_reduce(x)


def evaluate(net, dataset, num_classes: int, batch_size: int, distributed: bool = False, log=print,
             label: str = "eval", forward: nn.Cell | None = None, keep_predictions: bool = False) -> dict:
    """Run `net` (eval mode) over `dataset` ("image", "label" int32); every short batch is padded to
    `batch_size` so graph mode compiles once. Returns top1, top5, loss, num_images, per_class_correct,
    per_class_total, confusion (numpy, summed over ranks); with `keep_predictions` also this rank's
    top_classes and top_logits, (images, k) in dataset order, and rounding_sensitivity: the largest
    change of a top-k logit of the first batch under rounding_nudges (three more forward calls of that
    batch; rank 0's on several ranks), the parity gate's yardstick. Pass the same `forward`
    (`eval_forward(net, num_classes)`) every epoch to compile the eval graph only once."""
    net.set_train(False)
    forward = forward if forward is not None else eval_forward(net, num_classes)
    confusion = np.zeros((num_classes, num_classes), np.float64)
    top5_correct, loss_sum = 0.0, 0.0
    kept_classes, kept_logits = [], []
    steps = dataset.get_dataset_size()
    start = time.time()
    for step, (images, labels) in enumerate(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True), 1):
        n = len(labels)
        if n < batch_size:
            images = np.concatenate([images, np.zeros((batch_size - n,) + images.shape[1:], images.dtype)])
            labels_in = np.concatenate([labels, np.zeros(batch_size - n, labels.dtype)])
        else:
            labels_in = labels
        losses, values, top = forward(Tensor(images), Tensor(labels_in.astype(np.int32)))
        losses, top = losses.asnumpy()[:n], top.asnumpy()[:n]
        if keep_predictions:
            kept_classes.append(top)
            kept_logits.append(values.asnumpy()[:n])
            if step == 1:
                sensitivity = rounding_sensitivity(forward, images, labels_in, kept_logits[0], n)
        np.add.at(confusion, (labels, top[:, 0]), 1)
        top5_correct += float((top == labels[:, None]).any(1).sum())
        loss_sum += float(losses.sum())
        if step == steps or step % 20 == 0:
            log(f"[{label}] step {step}/{steps} {time.time() - start:.1f}s")
    stats = np.concatenate([confusion.ravel(), [top5_correct, loss_sum]])
    if distributed:
        stats = SumAcrossRanks()(Tensor(stats.astype(np.float32))).asnumpy().astype(np.float64)
    confusion = stats[:-2].reshape(num_classes, num_classes)
    top5_correct, loss_sum = stats[-2], stats[-1]
    total = confusion.sum()
    result = {"top1": float(np.trace(confusion) / max(total, 1)), "top5": float(top5_correct / max(total, 1)),
              "loss": float(loss_sum / max(total, 1)), "num_images": int(round(total)),
              "per_class_correct": np.diag(confusion).round().astype(int).tolist(),
              "per_class_total": confusion.sum(1).round().astype(int).tolist(),
              "confusion": confusion.round().astype(int).tolist()}
    if keep_predictions:
        k = min(5, num_classes)
        result["top_classes"] = np.concatenate(kept_classes) if kept_classes else np.zeros((0, k), np.int64)
        result["top_logits"] = np.concatenate(kept_logits) if kept_logits else np.zeros((0, k), np.float32)
        result["rounding_sensitivity"] = sensitivity if kept_logits else 0.0
    return result


def rounding_sensitivity(forward, images: np.ndarray, labels: np.ndarray, top_logits: np.ndarray, n: int) -> float:
    """How far the sorted top-k logits of the batch's first `n` images move under rounding_nudges."""
    from ..predictions import largest_move

    def top_k_logits(batch):
        return forward(Tensor(batch), Tensor(labels.astype(np.int32)))[1].asnumpy()[:n]

    return largest_move(top_k_logits, images, top_logits)


def gather_predictions(result: dict, shard: np.ndarray, num_images: int, distributed: bool):
    """(top classes, top logits) of the whole split in file order: each rank fills its own rows (its shard's
    image indices) and the ranks' tables are summed (zeros elsewhere, so the sum is exact)."""
    k = result["top_classes"].shape[1]
    table = np.zeros((num_images, 2 * k), np.float32)  # classes < 2^24: exact in float32
    table[shard, :k] = result["top_classes"]
    table[shard, k:] = result["top_logits"]
    if distributed:
        table = SumAcrossRanks()(Tensor(table)).asnumpy()
    return table[:, :k].round().astype(np.int64), table[:, k:]


def run_evaluation(cfg: dict, checkpoint: str, data_url: str, split: str, batch_size: int, ctx,
                   predictions: bool = False) -> dict:
    """The report evaluate.py writes: top1, top5, loss, num_images, class_names, per_class_accuracy,
    confusion_matrix (rows: true class, columns: predicted); with `predictions` also "predictions",
    the per-image records of vig.predictions for the whole split (on every rank)."""
    from ..config import build_model
    from ..data import build_eval_dataset, class_names, eval_shard, list_images
    from ..predictions import records
    from ..weights import load_weights

    net = build_model(cfg, training=False)
    weights = load_weights(net, checkpoint, tag="[eval]", target=cfg["arch"])  # before any data is read
    names = class_names(f"{data_url}/{split}")
    dataset = build_eval_dataset(data_url, cfg, batch_size, ctx.rank, ctx.world_size, split=split)
    result = evaluate(net, dataset, cfg["num_classes"], batch_size, ctx.distributed, label=f"eval {split}",
                      keep_predictions=predictions)
    per_class = {name: (c / t if t else None) for name, c, t in
                 zip(names, result["per_class_correct"], result["per_class_total"])}
    report = {"top1": result["top1"], "top5": result["top5"], "loss": result["loss"],
              "num_images": result["num_images"], "checkpoint": str(checkpoint),
              "weights_sha256": weights.sha256, "split": split,
              "class_names": names, "per_class_accuracy": per_class, "confusion_matrix": result["confusion"]}
    if predictions:
        _, paths, labels = list_images(f"{data_url}/{split}")
        shard = eval_shard(len(paths), ctx.rank, ctx.world_size)
        top, logits = gather_predictions(result, shard, len(paths), ctx.distributed)
        stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
        report["predictions"] = records(stems, labels, top, logits)
        report["rounding_sensitivity"] = result["rounding_sensitivity"]
    return report
