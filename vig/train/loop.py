"""The training loop: build everything from a config, resume, train epoch by epoch, evaluate, save.

Reproducibility: everything random is a pure function of (seed, epoch, step, rank): the datasets seed
themselves from (seed, epoch[, rank]), DropPath reads per-step noise (step.StepNoise), and the state is
saved at epoch ends, so a run killed anywhere and resumed repeats the interrupted epoch exactly.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import build_model, training_hash
from ..io import write_jsonl
from . import checkpoint as ckpt_io
from .distributed import Context


@dataclass
class TrainOptions:
    cfg: dict
    data_url: str
    state_root: str
    output_ckpt: str | None = None
    metrics: str | None = None
    resume: str = "auto"
    log_dir: str | None = None
    ctx: Context = field(default_factory=Context)


class RankLog:
    """print + (with a log dir) this rank's own file; lines are flushed immediately."""

    def __init__(self, rank: int, log_dir: str | None):
        self.rank = rank
        self.file = None
        if log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.file = open(Path(log_dir) / f"train_rank{rank}.log", "a")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        if self.file:
            self.file.write(line + "\n")
            self.file.flush()


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def model_parameters(net) -> dict:
    from .step import weight_parameters

    return {p.name: p for p in weight_parameters(net)}


def optimizer_parameters(optimizer, net_params: dict) -> dict:
    """The optimizer's own state (moments, global_step, ...), not the network weights it updates."""
    own = {id(p) for p in net_params.values()}
    return {name: p for name, p in optimizer.parameters_and_names() if id(p) not in own}


class swapped_weights:
    """Temporarily load `shadow` values (EMA) into the model's parameters.

    Copied in place (ops.assign), not by set_data: with gradient accumulation two compiled graphs share the
    weights, and after a set_data the optimizer's graph updated a copy the micro-batch graph no longer read
    (checked on 2.10: training stalled after the first validation)."""

    def __init__(self, params: dict, shadow: dict | None):
        self.params, self.shadow, self.saved = params, shadow, None

    def __enter__(self):
        from mindspore import ops

        if self.shadow:
            self.saved = {n: p.data.copy() for n, p in self.params.items()}
            for n, p in self.params.items():
                ops.assign(p, self.shadow[n])
        return self

    def __exit__(self, *exc):
        from mindspore import ops

        if self.saved:
            for n, p in self.params.items():
                ops.assign(p, self.saved[n])


class Trainer:
    def __init__(self, opts: TrainOptions):
        import mindspore as ms
        from mindspore import nn
        from mindspore.communication import GlobalComm

        from ..data import train_steps_per_epoch
        from ..weights import load_weights
        from .loss import SoftTargetCrossEntropy
        from .optim import build_optimizer
        from .schedule import build_lr_schedule
        from .step import (EMA, StepNoise, apply_amp, build_loss_scaler, build_train_step, clip_value,
                           has_unseeded_randomness, make_drop_path_deterministic, scaler_parameters)

        self.opts, self.cfg, self.ctx = opts, opts.cfg, opts.ctx
        cfg, ctx = self.cfg, self.ctx
        self.log = RankLog(ctx.rank, opts.log_dir)
        self.config_hash = training_hash(cfg)
        self.state_dir = ckpt_io.state_dir(opts.state_root, self.config_hash)
        self.batch_size = cfg["batch_size"]
        self.accumulation = cfg["accumulation_step"]  # micro-batches of batch_size per optimizer step
        self.global_batch = self.batch_size * ctx.world_size * self.accumulation

        ms.set_seed(cfg["seed"])
        np.random.seed(cfg["seed"])  # model init draws from numpy too; identical on every rank
        net = build_model(cfg, training=True)
        if cfg.get("pretrained"):  # before any data is read: a file that does not fit stops here
            load_weights(net, cfg["pretrained"], allow_new_head=True, log=self.log, tag="[pretrained]",
                         target=f"{cfg['arch']} (num_classes={cfg['num_classes']})")
        # rank 0 writes the states: it holds the folder while it runs (an orphan of a killed job would too);
        # taken once the weights fit, so a refused file leaves no state folder behind
        self.state_lock = ckpt_io.lock_state_folder(self.state_dir) if ctx.rank == 0 else None
        # optimizer steps per epoch; the micro-batches that make no full step are left out of the epoch (as
        # drop_remainder leaves out a partial batch), so every step has the global batch the LR is scaled for
        self.micro_batches_per_epoch = train_steps_per_epoch(opts.data_url, self.batch_size, ctx.world_size)
        self.steps_per_epoch = self.micro_batches_per_epoch // self.accumulation
        if self.steps_per_epoch < 1:
            raise ValueError(f"{opts.data_url}/train has fewer images than one optimizer step: batch_size "
                             f"{self.batch_size} x {ctx.world_size} rank(s) x accumulation_step {self.accumulation} "
                             f"= {self.global_batch} images")
        self.noise = StepNoise(make_drop_path_deterministic(net, self.batch_size), cfg["seed"], ctx.rank)
        unseeded = has_unseeded_randomness(net)
        if unseeded:
            self.log(f"[train] WARNING: random cells not driven by the step's random seed, resume will not be exact: "
                     f"{', '.join(unseeded[:5])}")
        self.net = apply_amp(net, cfg["amp_level"])
        self.lr = build_lr_schedule(cfg, self.steps_per_epoch, ctx.world_size)
        self.optimizer = build_optimizer(cfg, self.net, self.lr)
        self.scaler = build_loss_scaler(cfg)
        self.net_params = model_parameters(self.net)
        self.ema = EMA(self.net, cfg["ema_decay"]) if cfg["ema"] else None
        reducer = None
        if ctx.distributed:
            reducer = nn.DistributedGradReducer(self.optimizer.parameters, mean=True, degree=ctx.world_size,
                                                group=GlobalComm.WORLD_COMM_GROUP)
        self.step_fn = build_train_step(self.net, SoftTargetCrossEntropy(), self.optimizer, self.scaler,
                                        clip_value(cfg), reducer, self.ema, self.accumulation)
        self.state_groups = {"net": self.net_params,
                             "opt": optimizer_parameters(self.optimizer, self.net_params),
                             "scaler": scaler_parameters(self.scaler)}
        if self.ema is not None:
            self.state_groups["ema"] = self.ema.named_shadows()
        self.history: list[dict] = []
        self.eval_forward = None
        self.best = {"top1": -1.0, "epoch": None}

    # ---- state ---------------------------------------------------------------------------------
    def resume(self) -> int:
        """Load the state chosen by --resume; returns the first epoch (0-based) still to train."""
        info = ckpt_io.pick_resume_state(self.opts.resume, self.state_dir, self.config_hash, self.log)
        if info is None:
            self.log(f"[resume] starting fresh (state folder {self.state_dir})")
            return self.start_at(self.cfg["start_epoch"])
        extra = ckpt_io.load_state(info, self.state_groups)
        if extra.get("world_size", self.ctx.world_size) != self.ctx.world_size:
            self.log(f"[resume] WARNING: the state was trained on {extra['world_size']} rank(s), this job has "
                     f"{self.ctx.world_size}: data shards and the scaled LR differ from the original run")
        self.history = extra.get("history", [])
        self.best = extra.get("best", self.best)
        self.log(f"[resume] {info.path}: {info.epoch} epoch(s) done, global step {extra.get('global_step')}, "
                 f"best top-1 {self.best['top1']:.4f}")
        return info.epoch

    def start_at(self, epoch: int) -> int:
        """The seed's start_epoch: a fresh run enters the `epochs`-long schedule at `epoch`, so it trains
        epochs epoch+1..E with the LR (and data seeds) those epochs have in the full run."""
        if epoch:
            import mindspore as ms

            step = epoch * self.steps_per_epoch
            self.optimizer.global_step.set_data(ms.Tensor(np.array([step], np.int32)))
            self.log(f"[train] start_epoch {epoch}: training epochs {epoch + 1}..{self.cfg['epochs']}, the LR "
                     f"schedule entered at step {step} (lr {float(self.lr[step]):.3e})")
        return epoch

    def save(self, epochs_done: int) -> None:
        """The resumable state every `save_every` epochs and after the last one (rank 0 writes it)."""
        if epochs_done % self.cfg["save_every"] and epochs_done != self.cfg["epochs"]:
            return
        if self.ctx.rank != 0:
            return
        extra = {"global_step": epochs_done * self.steps_per_epoch, "history": self.history, "best": self.best,
                 "seed": self.cfg["seed"], "world_size": self.ctx.world_size}
        path = ckpt_io.save_state(self.state_dir, epochs_done, self.config_hash, self.state_groups, extra)
        ckpt_io.prune_states(self.state_dir, self.cfg["keep_checkpoint_max"])
        self.log(f"[state] saved {path}")

    def validated_weights(self) -> dict:
        """The weights validation measures: the EMA shadows when EMA is on."""
        return self.ema.named_shadows() if self.ema is not None else self.net_params

    def save_best(self) -> None:
        """The best epoch's validated weights in their own file, written before the epoch's state: pruning
        never touches them, and a state that names epoch N best always finds them (rank 0 writes)."""
        if self.ctx.rank == 0:
            ckpt_io.save_best(self.state_dir, self.best, self.validated_weights())

    # ---- loop ----------------------------------------------------------------------------------
    def run(self) -> dict:
        start_epoch = self.resume()
        epochs = self.cfg["epochs"]
        if self.ctx.rank == 0 and start_epoch < epochs:  # not an epoch of work that cannot be saved
            ckpt_io.ensure_room_for_state(self.state_dir, start_epoch + 1, self.state_groups)
        total_steps = epochs * self.steps_per_epoch
        self.log(f"[train] {self.cfg['arch']}: {epochs} epochs x {self.steps_per_epoch} steps, {self.batch_text()}, "
                 f"config hash {self.config_hash}")
        dropped = self.micro_batches_per_epoch - self.steps_per_epoch * self.accumulation
        if dropped:
            self.log(f"[train] {self.micro_batches_per_epoch} batches per rank per epoch: the last {dropped} make no "
                     f"full step of {self.accumulation} and are left out of every epoch")
        run_start, steps_run = time.time(), 0
        for epoch in range(start_epoch, epochs):
            record, steps_done = self.train_epoch(epoch, run_start, steps_run, total_steps)
            steps_run += steps_done
            if self.ctx.distributed:
                self.share_rank0_running_stats()
            record.update(self.validate(epoch))
            self.history.append(record)
            if record["val_top1"] > self.best["top1"]:
                self.best = {"top1": record["val_top1"], "epoch": epoch + 1}
                self.save_best()
            self.write_metrics()
            self.log(f"[epoch {epoch + 1}/{epochs}] train_loss {record['train_loss']:.4f} val_top1 "
                     f"{record['val_top1']:.4f} val_top5 {record['val_top5']:.4f} val_loss {record['val_loss']:.4f} "
                     f"{record['images/s']:.1f} img/s {record['seconds']:.1f}s")
            self.save(epoch + 1)
        choice = self.final_choice()
        # also when resuming a finished run: the outputs are rebuilt from the state
        self.write_metrics({"final_weights": choice, "final_epoch": self.final_epoch(choice)})
        self.write_final_weights(choice)
        return self.history[-1] if self.history else {}

    def train_epoch(self, epoch: int, run_start: float, steps_before: int, total_steps: int):
        import mindspore as ms
        from mindspore import Tensor

        from ..data import build_train_dataset

        cfg, ctx = self.cfg, self.ctx
        ms.set_seed(cfg["seed"] + epoch)  # host-side MindSpore randomness restarts with the epoch
        dataset = build_train_dataset(self.opts.data_url, cfg, self.batch_size, ctx.rank, ctx.world_size,
                                      seed=cfg["seed"], epoch=epoch)
        self.net.set_train(True)
        steps = self.steps_per_epoch
        epoch_start, losses = time.time(), []
        step_log = self.state_dir / f"steps_rank{ctx.rank}.jsonl"
        step_log.parent.mkdir(parents=True, exist_ok=True)
        with open(step_log, "a") as steps_fh:
            for i, (images, labels) in enumerate(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)):
                if i == steps * self.accumulation:  # the batches that make no full step
                    break
                lr = float(self.lr[min(int(self.optimizer.global_step.asnumpy().reshape(-1)[0]), len(self.lr) - 1)])
                self.noise.set_step(epoch, i)
                done = self.step_fn(Tensor(images), Tensor(labels))
                if done is None:  # a micro-batch before the last of its optimizer step
                    continue
                step = (i + 1) // self.accumulation
                loss, finite, scale = float(done[0].asnumpy()), bool(done[1].asnumpy()), float(done[2].asnumpy())
                losses.append(loss)
                steps_fh.write(json.dumps({"epoch": epoch + 1, "step": step, "loss": loss, "finite": finite,
                                           "loss_scale": scale, "lr": lr}) + "\n")
                steps_fh.flush()
                if not finite:
                    self.log(f"[train] epoch {epoch + 1} step {step}: non-finite gradients, step skipped, "
                             f"loss scale now {scale:g}")
                if step % cfg["log_every"] == 0 or step == steps:
                    self.progress(epoch, step, loss, lr, scale, epoch_start, run_start, steps_before, total_steps)
        seconds = time.time() - epoch_start
        images = len(losses) * self.global_batch
        finite_losses = [l for l in losses if np.isfinite(l)]
        loss_sum, loss_count = float(np.sum(finite_losses)), len(finite_losses)
        if ctx.distributed:  # the mean over every rank's batches, not rank 0's alone
            from .evaluate import SumAcrossRanks

            loss_sum, loss_count = SumAcrossRanks()(Tensor(np.array([loss_sum, loss_count], np.float32))).asnumpy()
        record = {"epoch": epoch + 1, "train_loss": float(loss_sum / loss_count) if loss_count else float("nan"),
                  "lr": lr if losses else None, "images/s": images / max(seconds, 1e-9), "seconds": seconds}
        return record, len(losses)

    def batch_text(self) -> str:
        """'global batch 32 = batch 8 x 2 rank(s) x accumulation 2' (what the LR scaling and the steps use)."""
        return (f"global batch {self.global_batch} = batch {self.batch_size} x {self.ctx.world_size} rank(s) x "
                f"accumulation {self.accumulation}")

    def progress(self, epoch, step, loss, lr, scale, epoch_start, run_start, steps_before, total_steps):
        now = time.time()
        done_here = steps_before + step
        rate = self.global_batch * step / max(now - epoch_start, 1e-9)
        remaining = (total_steps - (epoch * self.steps_per_epoch + step)) * (now - run_start) / max(done_here, 1)
        self.log(f"[train] epoch {epoch + 1}/{self.cfg['epochs']} step {step}/{self.steps_per_epoch} loss {loss:.4f} "
                 f"lr {lr:.3e} loss_scale {scale:g} {rate:.1f} img/s ETA {format_eta(remaining)}")

    def share_rank0_running_stats(self) -> None:
        """Copy rank 0's non-trained parameters (BatchNorm running statistics, and their EMA) to every rank.

        Each rank's statistics come from its own batches, as in the seed and the original (its --dist-bn
        defaults to off), and rank 0's leave training. Training never reads them (BatchNorm uses batch
        statistics in training mode), so copying them changes nothing rank 0 computes; it makes the ranks
        hold one model, so the sharded validation measures exactly the weights rank 0 writes.
        """
        from .distributed import copy_from_rank0

        trained = {id(p) for p in self.net.trainable_params()}
        stats = [p for p in self.net_params.values() if id(p) not in trained]
        if self.ema is not None:
            shadows = self.ema.named_shadows()
            stats += [shadows[name] for name, p in self.net_params.items() if id(p) not in trained]
        copy_from_rank0(stats, self.ctx.rank)

    def validate(self, epoch: int) -> dict:
        from ..data import build_eval_dataset
        from .evaluate import eval_forward, evaluate

        if self.eval_forward is None:
            self.eval_forward = eval_forward(self.net, self.cfg["num_classes"])
        dataset = build_eval_dataset(self.opts.data_url, self.cfg, self.batch_size, self.ctx.rank,
                                     self.ctx.world_size, split="val")
        shadow = self.ema.named_shadows() if self.ema is not None else None
        with swapped_weights(self.net_params, shadow):
            result = evaluate(self.net, dataset, self.cfg["num_classes"], self.batch_size, self.ctx.distributed,
                              self.log, label=f"val {epoch + 1}", forward=self.eval_forward)
        self.net.set_train(True)
        return {"val_top1": result["top1"], "val_top5": result["top5"], "val_loss": result["loss"],
                "val_images": result["num_images"]}

    def write_metrics(self, final: dict | None = None) -> None:
        """metrics.jsonl; `final` (which weights left training) goes into the last epoch's record."""
        if self.ctx.rank != 0 or not self.opts.metrics:
            return
        records = list(self.history)
        if final and records:
            records[-1] = {**records[-1], **final}
        write_jsonl(self.opts.metrics, records)

    def final_choice(self) -> str:
        choice = self.cfg.get("final_weights")
        return choice or ("ema" if self.ema is not None else "last")

    def final_epoch(self, choice: str) -> int | None:
        return self.best["epoch"] if choice == "best" else (self.history[-1]["epoch"] if self.history else None)

    def write_final_weights(self, choice: str) -> None:
        # every rank logs a digest of all its weights, BatchNorm statistics included: equal digests = the
        # ranks hold the model rank 0 writes (gradients all-reduced, statistics shared after each epoch)
        digest = hashlib.sha256()
        for p in self.net_params.values():
            digest.update(p.asnumpy().tobytes())
        self.log(f"[train] rank {self.ctx.rank} weights sha256 {digest.hexdigest()[:16]}")
        if self.ctx.rank != 0 or not self.opts.output_ckpt:
            return
        if choice == "best":
            params = ckpt_io.load_best(self.state_dir, self.best)
        else:
            params = self.ema.named_shadows() if choice == "ema" else self.net_params
        ckpt_io.write_weights(self.opts.output_ckpt, params)
        kind = {"best": f"best (epoch {self.best['epoch']}, val top-1 {self.best['top1']:.4f})",
                "ema": "EMA", "last": "last epoch's"}[choice]
        self.log(f"[train] wrote the {kind} weights to {self.opts.output_ckpt} (final_weights: {choice})")


def train(opts: TrainOptions) -> dict:
    trainer = Trainer(opts)
    try:
        return trainer.run()
    finally:
        if trainer.state_lock is not None:
            trainer.state_lock.close()
