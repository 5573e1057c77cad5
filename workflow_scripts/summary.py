#!/usr/bin/env python
"""The run's summary and parity gate: the deployed model must reproduce the evaluation exactly.

    python workflow_scripts/summary.py --eval eval/metrics.json --infer infer/accuracy.json \\
        --latency infer/latency.json --train_metrics metrics.jsonl --weights train/vig.ckpt --output summary.json

Same number of images and the same top-1 and top-5 correct counts, or exit status 1 with both shown
and nothing written. Prints the accuracy table (eval vs deployed). With --weights the summary also
says which weights were deployed (path, sha256, origin) and, with --pretrained, what training started from.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.deploy.cli import run  # noqa: E402
from vig.io import write_json  # noqa: E402
from vig.summary import ParityError, build_summary, format_table  # noqa: E402
from vig.weights import describe  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", required=True, metavar="JSON", help="evaluation metrics (eval/metrics.json)")
    parser.add_argument("--infer", required=True, metavar="JSON", help="deployed-model accuracy (postprocess output)")
    parser.add_argument("--latency", required=True, metavar="JSON", help="inference latency (infer output)")
    parser.add_argument("--train_metrics", metavar="JSONL", help="training metrics, one record per epoch (optional)")
    parser.add_argument("--weights", metavar="FILE", help="the deployed weights (recorded with their sha256)")
    parser.add_argument("--weights_origin", default="trained",
                        help="how they came about, e.g. 'trained' or 'given (train.from_weights)'")
    parser.add_argument("--pretrained", metavar="FILE", help="the weights training started from, if any")
    parser.add_argument("--output", required=True, metavar="JSON", help="summary file to write")
    args = parser.parse_args(argv)

    def summarise():
        summary = build_summary(args.eval, args.infer, args.latency, args.train_metrics)
        if args.weights:
            summary["weights"] = {**describe(args.weights), "origin": args.weights_origin}
            print(f"weights: {args.weights} (sha256 {summary['weights']['sha256']}, {args.weights_origin})")
        if args.pretrained:
            summary["pretrained"] = describe(args.pretrained)
            print(f"training started from {args.pretrained} (sha256 {summary['pretrained']['sha256']})")
        print(format_table(summary["accuracy"]))
        lat = summary["latency"]
        print(f"deployed latency: {lat['mean_ms']:.2f} ms/image mean, p50 {lat['p50_ms']:.2f}, p90 {lat['p90_ms']:.2f} "
              f"(batch {lat['batch_size']}, {lat['images']} images)")
        print("parity gate: passed (deployed model == evaluation on the same images)")
        write_json(args.output, summary)

    run(summarise, "summary", errors=(ParityError, ValueError, FileNotFoundError))


if __name__ == "__main__":
    main()
