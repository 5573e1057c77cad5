#!/usr/bin/env python
"""Evaluate ViG weights on a split of an ImageNet-format folder (the seed's eval transform).

    python workflow_scripts/evaluate.py --vig_config config/models/vig_demo.yaml \\
        --pretrained out/vig_demo.ckpt --data_url data/demo --split val --output out/eval.json

Writes JSON atomically: top1, top5, loss, num_images, class_names, per_class_accuracy {name: acc},
confusion_matrix (rows true class, columns predicted); with --predictions also every image's top-5
classes and logits (vig/predictions.py). With --rank_table the split is sharded over the
ranks and the counts summed, so every image counts once.
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # before MindSpore is imported anywhere
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, add_config_key_flags  # noqa: E402
from vig.config import DEFAULTS, add_config_arguments, config_from_args  # noqa: E402
from vig.train.cli import (UsageError, add_data_argument, add_launch_arguments, check_data_dir,  # noqa: E402
                           launch_or_init, run_cli, script_argv)
from vig.weights import add_pretrained_argument, pretrained_path  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__)
    add_config_arguments(parser)
    add_data_argument(parser)
    add_pretrained_argument(parser, "; --checkpoint is the same option", aliases=("--checkpoint",))
    parser.add_argument("--split", default="val", help="sub-folder of --data_url to evaluate (default %(default)s)")
    parser.add_argument("--output", metavar="JSON", help="where to write the report (rank 0, atomically)")
    parser.add_argument("--predictions", metavar="JSON",
                        help="also write every image's top-5 classes and logits (rank 0, atomically; "
                             "what the parity gate compares with the deployed model)")
    parser.add_argument("--batch_size", type=int, metavar="N",
                        help="images per batch per rank (default: the config's batch_size)")
    add_launch_arguments(parser)
    add_config_key_flags(parser, DEFAULTS)
    return parser


def run(argv=None) -> int:
    argv = script_argv(argv)
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    data_url = args.data_url or cfg["data_url"]
    check_data_dir(data_url, (args.split,))
    weights = pretrained_path(args, cfg, required=True)
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: expected a positive integer")
    code, ctx = launch_or_init(args, cfg, __file__, argv)
    if code is not None:
        return code

    import json

    from vig.io import write_json
    from vig.predictions import write_predictions
    from vig.train.evaluate import run_evaluation

    try:
        report = run_evaluation(cfg, weights, data_url, args.split, args.batch_size or cfg["batch_size"], ctx,
                                predictions=bool(args.predictions))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"[eval] {args.split}: top1 {report['top1']:.4f} top5 {report['top5']:.4f} loss {report['loss']:.4f} "
          f"over {report['num_images']} images", flush=True)
    predictions = report.pop("predictions", None)
    sensitivity = report.pop("rounding_sensitivity", None)
    if ctx.rank == 0:
        if predictions is not None:
            write_predictions(args.predictions, f"evaluation of {weights} on {args.split}", predictions,
                              rounding_sensitivity=sensitivity)
        if args.output:
            write_json(args.output, report)
        else:
            print(json.dumps({k: report[k] for k in ("top1", "top5", "loss", "num_images")}))
    return 0


def main(argv=None) -> int:
    return run_cli(run, argv, prog="evaluate.py")


if __name__ == "__main__":
    sys.exit(main())
