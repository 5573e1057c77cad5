#!/usr/bin/env python
"""Throughput of the full training step (forward, backward, loss scaling, clipping, AdamW) for ViG-Ti at
224x224, batch 8, GRAPH_MODE, on synthetic data: median img/s after warm-up and peak RSS, as JSON on stdout.

    python bench/train_throughput.py [--arch vig_ti_patch16_224] [--batch_size 8] [--steps 5] [--warmup 2]

The data pipeline alone is measured by bench/data_throughput.py. Progress goes to stderr.
"""
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vig.cli import Parser  # noqa: E402


def main(argv=None) -> int:
    parser = Parser(description=__doc__)
    parser.add_argument("--arch", default="vig_ti_patch16_224")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--amp_level", default="O0", choices=["O0", "O2", "O3"],
                        help="O0 by default: float16 is slower on CPU (mindspore_cpu_probe.md)")
    parser.add_argument("--drop_path_rate", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps incl. compile (default %(default)s)")
    parser.add_argument("--graph_mode", type=int, default=0, choices=[0, 1], help="0 GRAPH_MODE, 1 PYNATIVE")
    args = parser.parse_args(argv)

    import numpy as np
    import mindspore as ms
    from mindspore import Tensor

    from vig.config import DEFAULTS, build_model
    from vig.io import json_text
    from vig.train.loss import SoftTargetCrossEntropy
    from vig.train.optim import build_optimizer
    from vig.train.schedule import build_lr_schedule
    from vig.train.step import (StepNoise, TrainStep, apply_amp, build_loss_scaler, clip_value,
                                make_drop_path_deterministic)

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE if args.graph_mode == 0 else ms.PYNATIVE_MODE)
    cfg = dict(DEFAULTS, arch=args.arch, image_size=args.image_size, num_classes=args.num_classes,
               batch_size=args.batch_size, amp_level=args.amp_level, drop_path_rate=args.drop_path_rate, epochs=1)
    ms.set_seed(0)
    net = build_model(cfg, training=True)
    noise = StepNoise(make_drop_path_deterministic(net, args.batch_size), 0, 0)
    net = apply_amp(net, args.amp_level)
    total = args.warmup + args.steps
    optimizer = build_optimizer(cfg, net, build_lr_schedule(cfg, total))
    step = TrainStep(net, SoftTargetCrossEntropy(), optimizer, build_loss_scaler(cfg), clip_value(cfg))
    rng = np.random.default_rng(0)
    images = Tensor(rng.standard_normal((args.batch_size, 3, args.image_size, args.image_size)).astype(np.float32))
    labels = Tensor(rng.dirichlet(np.ones(args.num_classes), args.batch_size).astype(np.float32))
    times = []
    for i in range(total):
        noise.set_step(0, i)
        start = time.perf_counter()
        loss, finite, _ = step(images, labels)
        loss.asnumpy()
        times.append(time.perf_counter() - start)
        print(f"[bench] step {i + 1}/{total}: {times[-1]:.2f}s loss {float(loss.asnumpy()):.4f}"
              f"{' (warm-up)' if i < args.warmup else ''}", file=sys.stderr, flush=True)
    timed = times[args.warmup:]
    median = float(np.median(timed))
    result = {"bench": "train_throughput", "arch": args.arch, "image_size": args.image_size,
              "batch_size": args.batch_size, "amp_level": args.amp_level,
              "mode": "GRAPH_MODE" if args.graph_mode == 0 else "PYNATIVE_MODE",
              "params": int(sum(int(np.prod(p.shape)) for p in net.trainable_params())),
              "first_step_seconds": round(times[0], 3), "median_step_seconds": round(median, 4),
              "images_per_second": round(args.batch_size / median, 3),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "timed_steps": len(timed), "load_average_1min": round(os.getloadavg()[0], 2),
              "cpu_count": os.cpu_count()}
    print(json_text(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
