"""Training data pipeline img/s against what the training step consumes, side by side in one run (issue 3:
the pipeline must deliver >= 2x the images per second the step consumes, with the configured workers).

    .venv/bin/python bench/data_vs_step.py                       # ViG-Ti 224 batch 8, and the demo config
    .venv/bin/python bench/data_vs_step.py --configs config/models/vig_demo.yaml --batch_sizes 0 \\
        --data digits --steps 8 --rounds 1

Per config (each in a fresh subprocess), on a folder of JPEGs (`synthetic`: 500x375 photos-like JPEGs,
`digits`: the demo's own 32x32 digits, or a path to an ImageNet-format root):

- `pipeline`: `vig.data.build_train_dataset` alone, with the config's augmentation (RandAugment, random
  erasing, Mixup/CutMix) and workers (bench/data_throughput.py's `measure`): steady img/s, CPU ms/image;
- `trainer_in_memory`: the Trainer's own epoch loop (vig/train/loop.py `Trainer.train_epoch`, its compiled
  step, DropPath noise, per-step logging) fed one pre-built batch from memory `--steps` times: what the
  step consumes;
- `trainer_pipeline`: the same loop fed by the real pipeline (workers forked from the trainer process,
  sharing its CPUs): the honest combined number. `data_wait_s` is the time the loop spent waiting for
  the next batch, `step_s` the median step with the pipeline running beside it.

`--compare_processes` adds the pipeline with its workers forked as processes (vig.data runs up to
THREAD_WORKERS_MAX = 2 workers as threads) alone and in a third alternating trainer case.

The trainer cases alternate for `--rounds` rounds after a warm-up epoch (compile). Results:
`ratio` = pipeline img/s / trainer_in_memory img/s (target >= 2), `slowdown` = trainer_in_memory img/s /
trainer_pipeline img/s (1.0 = the pipeline costs training nothing). CPU seconds include the reaped worker
processes. The device is CPU, amp `--amp_level` (O0: float16 is slower on CPU), EMA as configured.
JSON on stdout, progress on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))
from vig.cli import Parser  # noqa: E402

import data_throughput  # noqa: E402  (bench/data_throughput.py: JPEG writer, pipeline measure, CPU time)
from model_throughput import print_result  # noqa: E402

DEFAULT_CONFIGS = ["config/models/vig_ti_patch16_224.yaml", "config/models/vig_demo.yaml"]


def parse_args(argv=None):
    parser = Parser(description=__doc__)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="model YAMLs (default: ViG-Ti, demo)")
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[8, 0],
                        help="one per config, 0 = the config's batch_size (default: 8 0)")
    parser.add_argument("--data", nargs="+", default=["synthetic"],
                        help="one per config (or one for all): synthetic | digits | <root with train/<class>/>")
    parser.add_argument("--workers", type=int, default=None,
                        help="num_parallel_workers for every config (default: each config's, capped at the CPUs)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per timed epoch (default 6)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two trainer cases (default 2)")
    parser.add_argument("--pipeline_batches", type=int, default=16,
                        help="batches for the pipeline-alone measure (default 16)")
    parser.add_argument("--amp_level", default="O0", choices=["O0", "O2", "O3"])
    parser.add_argument("--compare_processes", action="store_true",
                        help="also time the pipeline with its workers as forked processes (vig.data's choice "
                             "above THREAD_WORKERS_MAX workers): `pipeline_processes`, `trainer_pipeline_processes`")
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--output", default=None, help="also write the JSON here")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one config, as JSON
    args = parser.parse_args(argv)
    for name in ("steps", "rounds", "pipeline_batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("batch_sizes", "data"):
        values = getattr(args, name)
        if len(values) == 1:
            setattr(args, name, values * len(args.configs))
        elif len(values) != len(args.configs):
            parser.error(f"--{name.replace('_', '-')}: give one value or one per config ({len(args.configs)})")
    for size in args.batch_sizes:
        if size < 0:
            parser.error(f"--batch_sizes: {size} is negative")
    return args


def log(message):
    print(f"[data_vs_step] {message}", file=sys.stderr, flush=True)


# ---- data folders -------------------------------------------------------------------------------------

def make_source(kind, folder, images, num_classes, width, height):
    """An ImageNet-format root with >= `images` training images; returns its path."""
    if kind == "synthetic":
        data_throughput.write_jpegs(folder, images, min(num_classes, 8), width, height)
        for c in range(num_classes):  # empty class folders so a 1000-class config keeps its 1000-way head
            os.makedirs(os.path.join(folder, "train", f"class_{c:03d}"), exist_ok=True)
        return folder
    if kind == "digits":
        from vig.demo_data import build_demo_dataset

        with contextlib.redirect_stdout(sys.stderr):
            build_demo_dataset(folder, image_size=32, log=log)
        return folder
    if not os.path.isdir(os.path.join(kind, "train")):
        raise SystemExit(f"--data {kind}: expected synthetic, digits or a folder with train/<class>/")
    return kind


def subset_root(source, folder, count):
    """`count` images of `source`/train spread over its classes, as symlinks: one epoch of exactly that size."""
    from vig.data import list_images

    names, paths, _ = list_images(os.path.join(source, "train"))
    if len(paths) < count:
        raise SystemExit(f"{source}/train has {len(paths)} images, fewer than the {count} one timed epoch needs")
    for name in names:
        os.makedirs(os.path.join(folder, "train", name), exist_ok=True)
    picks = [paths[i] for i in (len(paths) * k // count for k in range(count))]
    for i, path in enumerate(picks):
        cls = os.path.basename(os.path.dirname(path))
        os.symlink(os.path.abspath(path), os.path.join(folder, "train", cls, f"{i:06d}_{os.path.basename(path)}"))
    return folder


# ---- the trainer, fed from memory or by the pipeline ----------------------------------------------------

class InMemoryDataset:
    """What build_train_dataset returns, as far as Trainer.train_epoch uses it: `steps` copies of one batch."""

    def __init__(self, batch, steps):
        self.batch, self.steps = batch, steps

    def create_tuple_iterator(self, num_epochs=1, output_numpy=True):
        return iter([self.batch] * self.steps)


class Clock:
    """Timestamps of one epoch: iterator start-up, every wait for a batch, every step."""

    def __init__(self):
        self.iterator_s, self.waits, self.steps = 0.0, [], []  # steps: (start, end) perf_counter pairs


class TimedIterator:
    def __init__(self, iterator, clock):
        self.iterator, self.clock = iterator, clock

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            self.clock.waits.append(time.perf_counter() - start)


class TimedDataset:
    def __init__(self, dataset, clock):
        self.dataset, self.clock = dataset, clock

    def create_tuple_iterator(self, **kwargs):
        start = time.perf_counter()  # MindSpore launches the pipeline (forks the workers) here
        iterator = self.dataset.create_tuple_iterator(**kwargs)
        self.clock.iterator_s = time.perf_counter() - start
        return TimedIterator(iterator, self.clock)


class TimedStep:
    """Stands in for Trainer.step_fn: runs it, waits for its result, records when it ran."""

    def __init__(self, step_fn, clock):
        self.step_fn, self.clock = step_fn, clock

    def __call__(self, images, labels):
        start = time.perf_counter()
        out = self.step_fn(images, labels)
        if out is not None:  # None: a micro-batch of an accumulated step
            out[0].asnumpy()
        self.clock.steps.append((start, time.perf_counter()))
        return out


def timed_epoch(trainer, epoch, source):
    """Trainer.train_epoch with the dataset `source(build_train_dataset, ...)` returns; its timings.

    `images_per_s` counts the whole call (dataset build, worker start-up, teardown: what a real epoch
    pays); `steady_images_per_s` the images after the first batch over the time from the end of the
    first step to the end of the last (what a long epoch approaches).
    """
    import vig.data

    clock = Clock()
    real_build = vig.data.build_train_dataset
    vig.data.build_train_dataset = lambda *a, **k: TimedDataset(source(real_build, *a, **k), clock)
    real_step, trainer.step_fn = trainer.step_fn, TimedStep(trainer.step_fn, clock)
    cpu_start, start = data_throughput.cpu_seconds(), time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            record, count = trainer.train_epoch(epoch, time.time(), 0, trainer.steps_per_epoch)
    finally:
        vig.data.build_train_dataset, trainer.step_fn = real_build, real_step
    wall = time.perf_counter() - start
    gc.collect()  # ends the pipeline's worker processes so their CPU time is counted
    time.sleep(1.0)
    cpu = data_throughput.cpu_seconds() - cpu_start
    batch, steps = trainer.batch_size, clock.steps
    steady_span = steps[-1][1] - steps[0][1]
    return dict(images_per_s=round(count * batch / wall, 2),
                steady_images_per_s=round((count - 1) * batch / steady_span, 2) if count > 1 else None,
                seconds=round(wall, 2), steps=count, step_s=round(statistics.median(e - s for s, e in steps), 3),
                startup_s=round(steps[0][0] - start, 2), iterator_start_s=round(clock.iterator_s, 2),
                first_batch_wait_s=round(clock.waits[0], 2),
                steady_data_wait_s=round(sum(clock.waits[1:count]), 2),  # between steps, after the first batch
                end_of_data_wait_s=round(sum(clock.waits[count:]), 2),  # the next() that ends the epoch
                teardown_s=round(start + wall - steps[-1][1] - sum(clock.waits[count:]), 2),
                cpu_ms_per_image=round(cpu / (count * batch) * 1000, 1),
                load_average_1min=round(os.getloadavg()[0], 2), train_loss=round(record["train_loss"], 4))


@contextlib.contextmanager
def worker_processes():
    """vig.data runs its workers as forked processes (what it does above THREAD_WORKERS_MAX workers)."""
    import vig.data.dataset

    saved, vig.data.dataset.THREAD_WORKERS_MAX = vig.data.dataset.THREAD_WORKERS_MAX, 0
    try:
        yield
    finally:
        vig.data.dataset.THREAD_WORKERS_MAX = saved


def run_case(case):
    """One config in this process: pipeline alone, then the two trainer cases alternating. Returns a dict."""
    from vig.config import load_model_config
    from vig.data import build_train_dataset, class_names, data_config
    from vig.data.settings import effective_workers

    # epochs: the LR schedule must cover the warm-up epoch and every timed one
    overrides = dict(device_target="CPU", amp_level=case["amp_level"], epochs=1 + 3 * case["rounds"], graph_mode=0)
    if case["batch_size"]:
        overrides["batch_size"] = case["batch_size"]
    if case["workers"] is not None:
        overrides["num_parallel_workers"] = case["workers"]
    cfg = load_model_config(case["config"], overrides)
    batch, steps = cfg["batch_size"], case["steps"]
    dcfg = data_config(cfg)
    with tempfile.TemporaryDirectory(prefix="vig_data_vs_step_") as tmp:
        images = max(case["pipeline_batches"], steps) * batch
        log(f"{case['config']}: preparing {case['data']} images ({images} for the pipeline alone)")
        source = make_source(case["data"], os.path.join(tmp, "source"), images, cfg["num_classes"],
                             case["width"], case["height"])
        cfg["num_classes"] = len(class_names(os.path.join(source, "train")))
        pipe_root = subset_root(source, os.path.join(tmp, "pipeline"), case["pipeline_batches"] * batch)
        train_root = subset_root(source, os.path.join(tmp, "train"), steps * batch)

        log(f"pipeline alone: {case['pipeline_batches']} batches of {batch}")
        pipeline = data_throughput.measure(pipe_root, cfg, batch)
        if case["compare_processes"]:
            with worker_processes():
                pipeline_processes = data_throughput.measure(pipe_root, cfg, batch)
        pipeline["per_image_ms_single_process"] = round(data_throughput.per_image_ms(pipe_root, dcfg), 2)
        pipeline["mixup_ms_per_batch"] = round(data_throughput.mixup_ms(dcfg, batch), 2)
        with contextlib.redirect_stdout(sys.stderr):
            first = next(build_train_dataset(train_root, cfg, batch, seed=0, epoch=0)
                         .create_tuple_iterator(num_epochs=1, output_numpy=True))
        memory_batch = (first[0].copy(), first[1].copy())
        gc.collect()

        from vig.train.distributed import init_process
        from vig.train.loop import Trainer, TrainOptions

        ctx = init_process("CPU", 0, 1, None)  # the trainer's own setup: device, graph mode, CPU op threads
        trainer = Trainer(TrainOptions(cfg=cfg, data_url=train_root, state_root=os.path.join(tmp, "state"),
                                       ctx=ctx))
        def in_memory(build, *a, **k):
            return InMemoryDataset(memory_batch, steps)

        def from_pipeline(build, *a, **k):
            return build(*a, **k)

        log("warm-up epoch (compiles the step)")
        start = time.perf_counter()
        warm = timed_epoch(trainer, 0, lambda build, *a, **k: InMemoryDataset(memory_batch, min(2, steps)))
        compile_s = time.perf_counter() - start
        cases = [("trainer_in_memory", in_memory, contextlib.nullcontext), ("trainer_pipeline", from_pipeline,
                                                                           contextlib.nullcontext)]
        if case["compare_processes"]:
            cases.append(("trainer_pipeline_processes", from_pipeline, worker_processes))
        rounds = {name: [] for name, _, _ in cases}
        epoch = 1
        for r in range(case["rounds"]):
            for name, source_fn, workers_as in cases:
                log(f"round {r + 1}/{case['rounds']}: {name}, {steps} steps of {batch}")
                with workers_as():
                    rounds[name].append(timed_epoch(trainer, epoch, source_fn))
                log(f"  {rounds[name][-1]}")
                epoch += 1

    def median(name, key):
        return statistics.median(x[key] for x in rounds[name])

    step_ips = median("trainer_in_memory", "steady_images_per_s")
    pipe_ips = pipeline["steady_images_per_s"] or pipeline["images_per_s"]
    result = dict(
        config=case["config"], arch=cfg["arch"], image_size=cfg["image_size"], batch_size=batch,
        num_classes=cfg["num_classes"], data=case["data"], amp_level=cfg["amp_level"], ema=cfg["ema"],
        workers=effective_workers(dcfg["num_parallel_workers"]), workers_configured=dcfg["num_parallel_workers"],
        cpu_count=os.cpu_count(), auto_augment=dcfg["auto_augment"], re_prob=dcfg["re_prob"],
        mix_up=dcfg["mix_up"], cutmix=dcfg["cutmix"],
        pipeline=pipeline, warmup_epoch_s=round(compile_s, 1), warmup_step_s=warm["step_s"], **rounds,
        pipeline_images_per_s=pipe_ips, step_images_per_s=step_ips,
        ratio=round(pipe_ips / step_ips, 2), target_ratio=2.0, target_met=pipe_ips >= 2.0 * step_ips,
        trainer_with_pipeline_steady_images_per_s=median("trainer_pipeline", "steady_images_per_s"),
        steady_slowdown=round(step_ips / median("trainer_pipeline", "steady_images_per_s"), 3),
        epoch_slowdown=round(median("trainer_in_memory", "images_per_s") / median("trainer_pipeline", "images_per_s"), 3),
        step_s_in_memory=median("trainer_in_memory", "step_s"), step_s_with_pipeline=median("trainer_pipeline", "step_s"),
        pipeline_startup_s=median("trainer_pipeline", "startup_s"),
        pipeline_end_of_data_s=median("trainer_pipeline", "end_of_data_wait_s"),
        pipeline_teardown_s=median("trainer_pipeline", "teardown_s"),
    )
    if case["compare_processes"]:
        result["pipeline_processes"] = pipeline_processes
        result["processes_epoch_slowdown"] = round(median("trainer_in_memory", "images_per_s")
                                                   / median("trainer_pipeline_processes", "images_per_s"), 3)
        result["processes_steady_slowdown"] = round(step_ips / median("trainer_pipeline_processes",
                                                                      "steady_images_per_s"), 3)
        result["processes_startup_s"] = median("trainer_pipeline_processes", "startup_s")
        result["processes_teardown_s"] = median("trainer_pipeline_processes", "teardown_s")
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    cases = []
    for config, batch, data in zip(args.configs, args.batch_sizes, args.data):
        case = dict(config=config, batch_size=batch, data=data, workers=args.workers, steps=args.steps,
                    rounds=args.rounds, pipeline_batches=args.pipeline_batches, amp_level=args.amp_level,
                    compare_processes=args.compare_processes,
                    width=args.width, height=args.height)
        log(f"case {config} batch {batch or 'config'} data {data} (fresh subprocess)")
        proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], stdout=subprocess.PIPE,
                              text=True, cwd=str(BENCH.parent))
        if proc.returncode != 0:
            raise SystemExit(f"case {config} failed (exit {proc.returncode}); see the progress above")
        cases.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    result = {"bench": "data_vs_step", "cases": cases, "load_average": [round(x, 2) for x in os.getloadavg()]}
    print_result(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
