"""A time plan before a long run (train.py --plan): the configured model, data and topology, a short
burst of real training steps after warm-up, and the wall time the configured epochs would take.

The projection adds, per epoch, the measured seconds per optimizer step fed by the real pipeline times
the steps per epoch, the validation (measured seconds per eval batch times the rank's eval batches)
and the pipeline's start-up (first batch of an epoch); once, the warm-up (compiling the step and the
eval graph). Nothing is saved: the weights the burst trains are dropped.
"""
from __future__ import annotations

import math
import os
import time

from mindspore import Tensor

from .loop import Trainer, TrainOptions, format_eta
from .schedule import lr_scale

SLURM_MARGIN = 1.25  # the runtime to ask a scheduler for: the projection plus a quarter


def _take(dataset, count: int):
    """Up to `count` batches of `dataset`, with the seconds until the first and between the others."""
    start, batches, waits = time.perf_counter(), [], []
    for images, labels in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        now = time.perf_counter()
        waits.append(now - start)
        batches.append((images, labels))
        if len(batches) == count:
            break
        start = time.perf_counter()
    return batches, waits


def train_batches(trainer: Trainer, count: int):
    """`count` training batches from the real pipeline (epochs 0, 1, ... when one epoch is shorter)."""
    from ..data import build_train_dataset

    batches, waits, epoch = [], [], 0
    while len(batches) < count:
        dataset = build_train_dataset(trainer.opts.data_url, trainer.cfg, trainer.batch_size, trainer.ctx.rank,
                                      trainer.ctx.world_size, seed=trainer.cfg["seed"], epoch=epoch)
        got, got_waits = _take(dataset, count - len(batches))
        batches += got
        waits += got_waits
        epoch += 1
    return batches, waits


def time_steps(trainer: Trainer, warmup: int, steps: int) -> dict:
    """Warm-up optimizer steps (compile), then `steps` timed ones (each of `accumulation_step` micro-batches),
    each fed by the pipeline as in training."""
    from ..data import build_train_dataset

    trainer.net.set_train(True)
    seconds, first = [], None
    done, epoch, warm_start = 0, 0, time.perf_counter()
    while done < warmup + steps:
        dataset = build_train_dataset(trainer.opts.data_url, trainer.cfg, trainer.batch_size, trainer.ctx.rank,
                                      trainer.ctx.world_size, seed=trainer.cfg["seed"], epoch=epoch)
        start = time.perf_counter()
        for i, (images, labels) in enumerate(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)):
            if i == trainer.steps_per_epoch * trainer.accumulation:  # as in training: no partial step
                break
            trainer.noise.set_step(epoch, i)
            done_step = trainer.step_fn(Tensor(images), Tensor(labels))
            if done_step is None:  # a micro-batch: the optimizer step ends with the last one
                continue
            done_step[0].asnumpy()
            now = time.perf_counter()
            if done == warmup - 1:
                first = now - warm_start
            if done >= warmup:
                seconds.append(now - start)
            done += 1
            if done % 5 == 0 or done == warmup + steps:
                trainer.log(f"[plan] step {done}/{warmup + steps} ({'warm-up' if done <= warmup else 'timed'})")
            start = time.perf_counter()
            if done == warmup + steps:
                break
        epoch += 1
    return {"warmup_s": first or 0.0, "step_s": sorted(seconds)[len(seconds) // 2], "steps_timed": len(seconds),
            "timed_s": sum(seconds)}


def time_pipeline(trainer: Trainer, batches: int) -> dict:
    """The training pipeline alone: its start-up (first batch) and its steady img/s."""
    _, waits = train_batches(trainer, batches + 1)
    steady = sum(waits[1:])
    return {"startup_s": waits[0], "images_per_s": len(waits[1:]) * trainer.batch_size / max(steady, 1e-9)}


def time_validation(trainer: Trainer, batches: int) -> dict:
    """Seconds per eval batch (forward only, after one untimed batch that compiles) and the rank's count."""
    from ..data import build_eval_dataset
    from ..data.folder import list_images
    from .evaluate import eval_forward

    forward = eval_forward(trainer.net, trainer.cfg["num_classes"])
    trainer.net.set_train(False)
    dataset = build_eval_dataset(trainer.opts.data_url, trainer.cfg, trainer.batch_size, trainer.ctx.rank,
                                 trainer.ctx.world_size, split="val")
    times, start = [], time.perf_counter()
    for i, (images, labels) in enumerate(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)):
        forward(Tensor(images), Tensor(labels.astype("int32")))[0].asnumpy()
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        if i == batches:
            break
    trainer.net.set_train(True)
    _, paths, _ = list_images(f"{trainer.opts.data_url}/val")
    per_rank = math.ceil(len(paths) / trainer.ctx.world_size)
    return {"batch_s": sorted(times[1:] or times)[len(times[1:] or times) // 2], "compile_s": times[0],
            "batches_per_epoch": math.ceil(per_rank / trainer.batch_size), "images": len(paths)}


def make_plan(opts: TrainOptions, steps: int = 20, warmup: int = 2) -> dict:
    trainer = Trainer(opts)
    cfg, ctx = trainer.cfg, trainer.ctx
    trainer.log(f"[plan] {cfg['arch']}: timing {warmup} warm-up + {steps} optimizer steps, {trainer.batch_text()}")
    pipeline = time_pipeline(trainer, min(steps, 10))
    timed = time_steps(trainer, warmup, steps)
    val = time_validation(trainer, min(steps, 10))
    epochs = cfg["epochs"] - cfg["start_epoch"]
    epoch_s = trainer.steps_per_epoch * timed["step_s"] + val["batches_per_epoch"] * val["batch_s"] \
        + pipeline["startup_s"]
    total_s = timed["warmup_s"] + val["compile_s"] + epochs * epoch_s
    return {
        "arch": cfg["arch"], "device_target": cfg["device_target"], "ranks": ctx.world_size,
        "batch_size": trainer.batch_size, "accumulation_step": trainer.accumulation,
        "global_batch": trainer.global_batch,
        "lr_base": cfg["base_lr"], "lr_scale": lr_scale(cfg, ctx.world_size), "lr_peak": float(trainer.lr.max()),
        "steps_per_epoch": trainer.steps_per_epoch, "micro_batches_per_epoch": trainer.micro_batches_per_epoch,
        "epochs": epochs, "steps_timed": timed["steps_timed"], "warmup_steps": warmup,
        "s_per_step": timed["step_s"], "images_per_s": trainer.global_batch / timed["step_s"],
        "pipeline_images_per_s": pipeline["images_per_s"] * ctx.world_size,
        "pipeline_startup_s": pipeline["startup_s"], "warmup_s": timed["warmup_s"],
        "val_batch_s": val["batch_s"], "val_batches_per_epoch": val["batches_per_epoch"],
        "epoch_s": epoch_s, "projected_s": total_s,
        "slurm_runtime_minutes": math.ceil(total_s * SLURM_MARGIN / 60),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def skipped_text(plan: dict) -> str:
    skipped = plan["micro_batches_per_epoch"] - plan["steps_per_epoch"] * plan["accumulation_step"]
    return f", the last {skipped} making no full step left out" if skipped else ""


def format_plan(plan: dict) -> str:
    return "\n".join([
        f"[plan] {plan['arch']} on {plan['ranks']} {plan['device_target']} rank(s)",
        f"[plan] global batch {plan['global_batch']} = batch {plan['batch_size']} x {plan['ranks']} rank(s) x "
        f"accumulation {plan['accumulation_step']}",
        f"[plan] LR: base {plan['lr_base']:g} x scale {plan['lr_scale']:g} -> peak {plan['lr_peak']:.4g}",
        f"[plan] steps per epoch {plan['steps_per_epoch']} (optimizer steps; {plan['micro_batches_per_epoch']} "
        f"batches per rank{skipped_text(plan)}), {plan['epochs']} epoch(s)",
        f"[plan] measured over {plan['steps_timed']} steps after {plan['warmup_steps']} warm-up: "
        f"{plan['s_per_step']:.3f} s/step, {plan['images_per_s']:.1f} img/s; data pipeline alone "
        f"{plan['pipeline_images_per_s']:.1f} img/s",
        f"[plan] validation {plan['val_batches_per_epoch']} batch(es) x {plan['val_batch_s']:.3f} s per epoch; "
        f"warm-up (compile) {plan['warmup_s']:.1f} s",
        f"[plan] projected: {format_eta(plan['epoch_s'])} per epoch, {format_eta(plan['projected_s'])} for "
        f"{plan['epochs']} epoch(s) ({plan['projected_s']:.0f} s); Slurm runtime with a "
        f"{int((SLURM_MARGIN - 1) * 100)}% margin: {plan['slurm_runtime_minutes']} min",
        f"[plan] load average {plan['load_average_1min']}: timings on a shared machine are noisy",
    ])
