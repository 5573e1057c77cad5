#!/usr/bin/env python
"""One picture for the run report (PNG, matplotlib Agg).

    python workflow_scripts/report_plots.py --kind curves --inputs metrics.jsonl --output curves.png
    python workflow_scripts/report_plots.py --kind confusion --inputs eval/metrics.json --output confusion.png
    python workflow_scripts/report_plots.py --kind accuracy --inputs summary.json --output accuracy.png
    python workflow_scripts/report_plots.py --kind benchmarks --inputs benchmarks/*.tsv --output benchmarks.png

curves: loss, lr and val top-1/top-5 per epoch; confusion: the evaluation's confusion matrix;
accuracy: eval vs deployed table (summary.json, or eval/metrics.json + infer/accuracy.json);
benchmarks: wall time and peak memory per step from Snakemake benchmark TSVs (named by file stem).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, run_cli  # noqa: E402
from vig.report import KINDS, plot  # noqa: E402


def run(argv=None) -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--kind", required=True, choices=sorted(KINDS), help="which picture")
    parser.add_argument("--inputs", required=True, nargs="+", metavar="FILE", help="the files it is drawn from")
    parser.add_argument("--output", required=True, metavar="PNG", help="picture to write (atomically)")
    args = parser.parse_args(argv)
    print(f"[report] {args.kind} -> {plot(args.kind, args.inputs, args.output)}")


def main(argv=None) -> int:
    return run_cli(run, argv, prog="report_plots.py", bad_input=(ValueError, FileNotFoundError),
                   failures=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
