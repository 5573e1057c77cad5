"""A time plan before a long run (train.py --plan): the configured model, data and topology, a short
burst of real training steps after warm-up, and the wall time the configured epochs would take.

The projection is what a training run pays, each part measured here on the real model, data and disk:
once, the process start-up (imports, model and optimizer build, data listing) and the compile time of the
step and eval graphs (their first calls beyond a steady call); per epoch, the steps (mean seconds per
optimizer step fed by the real pipeline: an epoch pays the sum, so the mean, not the median), the
validation (mean seconds per eval batch times the rank's eval batches) and both pipelines' start-up (each
epoch builds them anew); per saved state, the time to write one (timed on a scratch copy in the state root,
then removed). Nothing is kept: the weights the burst trains are dropped.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time

from pathlib import Path

from mindspore import Tensor

from .loop import Trainer, TrainOptions, format_eta
from .schedule import lr_scale

SLURM_MARGIN = 1.25  # the runtime to ask a scheduler for: the projection plus a quarter


def seconds_since_process_start() -> float:
    """Wall seconds since this process started (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


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
        start = time.perf_counter()
        dataset = build_train_dataset(trainer.opts.data_url, trainer.cfg, trainer.batch_size, trainer.ctx.rank,
                                      trainer.ctx.world_size, seed=trainer.cfg["seed"], epoch=epoch)
        built = time.perf_counter() - start
        got, got_waits = _take(dataset, count - len(batches))
        got_waits[0] += built  # an epoch builds its dataset before its first batch
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
    mean = sum(seconds) / len(seconds)
    return {"warmup_s": first or 0.0, "compile_s": max((first or 0.0) - warmup * mean, 0.0), "step_s": mean,
            "step_median_s": sorted(seconds)[len(seconds) // 2], "steps_timed": len(seconds)}


def time_pipeline(trainer: Trainer, batches: int) -> dict:
    """The training pipeline alone: its start-up (first batch) and its steady img/s."""
    _, waits = train_batches(trainer, batches + 1)
    steady = sum(waits[1:])
    return {"startup_s": waits[0], "images_per_s": len(waits[1:]) * trainer.batch_size / max(steady, 1e-9)}


def time_validation(trainer: Trainer, batches: int) -> dict:
    """The eval pipeline's start-up (built, first batch; no forward), then seconds per eval batch (forward
    fed by the pipeline; the first call, which compiles, apart) and the rank's count per epoch."""
    from ..data import build_eval_dataset
    from ..data.folder import list_images
    from .evaluate import eval_forward

    def build():
        return build_eval_dataset(trainer.opts.data_url, trainer.cfg, trainer.batch_size, trainer.ctx.rank,
                                  trainer.ctx.world_size, split="val")

    start = time.perf_counter()
    _take(build(), 1)
    startup = time.perf_counter() - start
    forward = eval_forward(trainer.net, trainer.cfg["num_classes"])
    trainer.net.set_train(False)
    dataset = build()
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
    steady = times[1:] or times
    batch_s = sum(steady) / len(steady)
    return {"startup_s": startup, "batch_s": batch_s, "compile_s": max(times[0] - startup - batch_s, 0.0),
            "batches_per_epoch": math.ceil(per_rank / trainer.batch_size), "images": len(paths)}


def time_state_write(trainer: Trainer) -> float:
    """Seconds to write one resumable state (checkpoint, manifest, sha256) in a scratch folder of the state
    root, removed afterwards: the state's size and the disk are the run's."""
    from . import checkpoint as ckpt_io

    root = trainer.state_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".plan-", dir=root))
    try:
        start = time.perf_counter()
        ckpt_io.save_state(scratch, 1, trainer.config_hash, trainer.state_groups, {"plan": True})
        return time.perf_counter() - start
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def states_written(cfg: dict) -> int:
    """How many states a run writes: every save_every epochs and after the last (Trainer.save)."""
    return sum(1 for e in range(cfg["start_epoch"] + 1, cfg["epochs"] + 1)
               if e % cfg["save_every"] == 0 or e == cfg["epochs"])


def make_plan(opts: TrainOptions, steps: int = 20, warmup: int = 2) -> dict:
    trainer = Trainer(opts)
    startup_s = seconds_since_process_start()  # what a run pays before its first step, up to here
    cfg, ctx = trainer.cfg, trainer.ctx
    trainer.log(f"[plan] {cfg['arch']}: timing {warmup} warm-up + {steps} optimizer steps, {trainer.batch_text()}")
    pipeline = time_pipeline(trainer, min(steps, 10))
    timed = time_steps(trainer, warmup, steps)
    val = time_validation(trainer, min(steps, 10))
    state_s = time_state_write(trainer)
    epochs = cfg["epochs"] - cfg["start_epoch"]
    epoch_s = trainer.steps_per_epoch * timed["step_s"] + val["batches_per_epoch"] * val["batch_s"] \
        + pipeline["startup_s"] + val["startup_s"]
    once_s = startup_s + timed["compile_s"] + val["compile_s"]
    total_s = once_s + epochs * epoch_s + states_written(cfg) * state_s
    return {
        "arch": cfg["arch"], "device_target": cfg["device_target"], "ranks": ctx.world_size,
        "batch_size": trainer.batch_size, "accumulation_step": trainer.accumulation,
        "global_batch": trainer.global_batch,
        "lr_base": cfg["base_lr"], "lr_scale": lr_scale(cfg, ctx.world_size), "lr_peak": float(trainer.lr.max()),
        "steps_per_epoch": trainer.steps_per_epoch, "micro_batches_per_epoch": trainer.micro_batches_per_epoch,
        "epochs": epochs, "steps_timed": timed["steps_timed"], "warmup_steps": warmup,
        "s_per_step": timed["step_s"], "s_per_step_median": timed["step_median_s"],
        "images_per_s": trainer.global_batch / timed["step_s"],
        "pipeline_images_per_s": pipeline["images_per_s"] * ctx.world_size,
        "pipeline_startup_s": pipeline["startup_s"], "val_pipeline_startup_s": val["startup_s"],
        "warmup_s": timed["warmup_s"], "startup_s": startup_s, "compile_s": timed["compile_s"] + val["compile_s"],
        "val_batch_s": val["batch_s"], "val_batches_per_epoch": val["batches_per_epoch"],
        "state_write_s": state_s, "states_written": states_written(cfg),
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
        f"{plan['s_per_step']:.3f} s/step (median {plan['s_per_step_median']:.3f}), {plan['images_per_s']:.1f} "
        f"img/s; data pipeline alone {plan['pipeline_images_per_s']:.1f} img/s",
        f"[plan] per epoch: validation {plan['val_batches_per_epoch']} batch(es) x {plan['val_batch_s']:.3f} s, "
        f"pipelines' start-up {plan['pipeline_startup_s'] + plan['val_pipeline_startup_s']:.1f} s; "
        f"{plan['states_written']} state write(s) x {plan['state_write_s']:.2f} s",
        f"[plan] once: process start-up {plan['startup_s']:.1f} s, compile {plan['compile_s']:.1f} s",
        f"[plan] projected: {format_eta(plan['epoch_s'])} per epoch, {format_eta(plan['projected_s'])} for "
        f"{plan['epochs']} epoch(s) ({plan['projected_s']:.0f} s); Slurm runtime with a "
        f"{int((SLURM_MARGIN - 1) * 100)}% margin: {plan['slurm_runtime_minutes']} min",
        f"[plan] load average {plan['load_average_1min']}: timings on a shared machine are noisy",
    ])
