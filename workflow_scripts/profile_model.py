#!/usr/bin/env python
"""Measure a model: parameters, multiply-accumulates per image and in-framework inference img/s.

    python workflow_scripts/profile_model.py --vig_config config/models/vig_demo.yaml \\
        --pretrained out/vig_demo.ckpt --batch_size 64 --output profile.json

Params and MACs are vig.models.complexity's counts (the paper's Params and FLOPs); img/s is the median
of --repeats eval forward passes of --batch_size random images at the config's image_size after
--warmup (GRAPH_MODE, the config's device), so it measures the model alone, not the data pipeline.
The JSON is written atomically.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # before MindSpore is imported anywhere
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser  # noqa: E402
from vig.config import add_config_arguments, config_from_args  # noqa: E402
from vig.train.cli import UsageError, run_cli  # noqa: E402
from vig.weights import add_pretrained_argument, pretrained_path  # noqa: E402


def build_parser():
    parser = Parser(description=__doc__)
    add_config_arguments(parser)
    add_pretrained_argument(parser, "; --checkpoint is the same option", aliases=("--checkpoint",))
    parser.add_argument("--batch_size", type=int, default=64, metavar="N", help="images per timed batch (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed batches first (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=10, metavar="N", help="timed batches (default %(default)s)")
    parser.add_argument("--output", required=True, metavar="JSON", help="where to write the measurements")
    return parser


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    weights = pretrained_path(args, cfg, required=True)
    for flag in ("batch_size", "repeats"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} {getattr(args, flag)}: expected a positive integer")
    if args.warmup < 0:
        raise UsageError(f"--warmup {args.warmup}: expected 0 or more")

    from vig.config import build_model
    from vig.deploy.cli import set_device
    from vig.io import write_json
    from vig.models.complexity import forward_throughput, model_complexity
    from vig.weights import load_weights

    set_device(cfg, graph_mode=False)  # MACs are traced in PyNative; the timed forward is jit-compiled
    net = build_model(cfg, training=False)
    load_weights(net, weights, tag="[profile]", target=cfg["arch"])
    counts = model_complexity(net)
    print(f"[profile] {counts['params_trainable']:,} trainable params, {counts['macs']:,} MACs per image", flush=True)
    speed = forward_throughput(net, args.batch_size, warmup=args.warmup, repeats=args.repeats)
    print(f"[profile] {speed['images_per_s']:.1f} img/s (batch {args.batch_size}, median of {args.repeats})",
          flush=True)
    write_json(args.output, {"arch": cfg["arch"], "model_overrides": cfg["model_overrides"],
                             "params": counts["params_trainable"], "params_total": counts["params_total"],
                             "macs": counts["macs"], **speed, "weights": str(weights)})
    return 0


def main(argv=None) -> int:
    return run_cli(run, argv, prog="profile_model.py")


if __name__ == "__main__":
    sys.exit(main())
