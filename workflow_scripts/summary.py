#!/usr/bin/env python
"""The run's summary and parity gate: every deployed model must reproduce the evaluation image by image.

    python workflow_scripts/summary.py --eval eval/metrics.json --eval_predictions eval/predictions.json \\
        --deployed MINDIR infer/mindir/accuracy.json infer/mindir/predictions.json infer/mindir/latency.json \\
        --deployed ONNX infer/onnx/accuracy.json infer/onnx/predictions.json infer/onnx/latency.json \\
        --train_metrics metrics.jsonl --weights train/vig.ckpt --output summary.json

For each --deployed target (name, postprocess accuracy, per-image predictions, infer latency): the
evaluation's images, and for every image the same label, top-1 class and set of top-5 classes (so the
same correct counts) or, where the kNN's rounding flips a near-tie, logits within twice the model's
measured rounding sensitivity (vig/summary.py; such images are listed); else exit status 1 naming the
target and the first differing images with both predictions and their top-1 margins, and nothing
written. Prints the accuracy table (eval vs each deployed target, with its latency). With --weights the summary also says which weights were deployed
(path, sha256, origin) and, with --pretrained, what training started from.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, run_cli  # noqa: E402
from vig.io import write_json  # noqa: E402
from vig.summary import DeployedTarget, ParityError, build_summary, format_table, listing  # noqa: E402
from vig.weights import describe  # noqa: E402


def run(argv=None) -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--eval", required=True, metavar="JSON", help="evaluation metrics (eval/metrics.json)")
    parser.add_argument("--eval_predictions", required=True, metavar="JSON",
                        help="the evaluation's per-image predictions (evaluate.py --predictions)")
    parser.add_argument("--deployed", required=True, action="append", nargs=4,
                        metavar=("NAME", "ACCURACY_JSON", "PREDICTIONS_JSON", "LATENCY_JSON"),
                        help="a deployed target: its name, accuracy and per-image predictions (postprocess.py "
                             "--output and --predictions) and latency (infer.py --latency); repeat for each "
                             "target")
    parser.add_argument("--train_metrics", metavar="JSONL", help="training metrics, one record per epoch (optional)")
    parser.add_argument("--weights", metavar="FILE", help="the deployed weights (recorded with their sha256)")
    parser.add_argument("--weights_origin", default="trained",
                        help="how they came about, e.g. 'trained' or 'given (train.from_weights)'")
    parser.add_argument("--pretrained", metavar="FILE", help="the weights training started from, if any")
    parser.add_argument("--near_tie_tolerance", type=float, metavar="LOGITS",
                        help="largest logit difference accepted for an image whose decision differs (a kNN "
                             "near-tie); default: twice the rounding sensitivity the evaluation recorded")
    parser.add_argument("--output", required=True, metavar="JSON", help="summary file to write")
    args = parser.parse_args(argv)
    if args.near_tie_tolerance is not None and not args.near_tie_tolerance >= 0:
        parser.error(f"--near_tie_tolerance {args.near_tie_tolerance}: expected a number >= 0")

    targets = [DeployedTarget(*target) for target in args.deployed]
    summary = build_summary(args.eval, args.eval_predictions, targets, args.train_metrics, args.near_tie_tolerance)
    if args.weights:
        summary["weights"] = {**describe(args.weights), "origin": args.weights_origin}
        print(f"weights: {args.weights} (sha256 {summary['weights']['sha256']}, {args.weights_origin})")
    if args.pretrained:
        summary["pretrained"] = describe(args.pretrained)
        print(f"training started from {args.pretrained} (sha256 {summary['pretrained']['sha256']})")
    print(format_table(summary["accuracy"]))
    for name, images in summary["images_compared"].items():
        ties = summary["near_ties"][name]
        if not ties:
            print(f"{name}: all {images} images have the evaluation's label, top-1 class and top-5 classes")
            continue
        print(f"{name}: {images - len(ties)} of {images} images have the evaluation's label, top-1 class and "
              f"top-5 classes; {len(ties)} differ only by a near-tie within {summary['near_tie_tolerance']:.4g} "
              f"(twice the model's rounding sensitivity): {listing(ties)}")
    for name, lat in summary["latency"].items():
        print(f"{name} latency: {lat['mean_ms']:.2f} ms/image mean, p50 {lat['p50_ms']:.2f}, p90 "
              f"{lat['p90_ms']:.2f} (batch {lat['batch_size']}, {lat['images']} images; {lat['runtime']})")
    print(f"parity gate: passed ({', '.join(summary['images_compared'])} == evaluation on the same images)")
    write_json(args.output, summary)


def main(argv=None) -> int:
    return run_cli(run, argv, prog="summary.py", bad_input=(ValueError, FileNotFoundError),
                   failures=(ParityError,))


if __name__ == "__main__":
    sys.exit(main())
