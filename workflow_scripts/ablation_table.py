#!/usr/bin/env python
"""Compare the branches of an ablation in one table, from each branch's own files.

    python workflow_scripts/ablation_table.py --variant mr results/demo/ablation/mr/ '{}' \\
        --variant edge results/demo/ablation/edge/ '{"model_overrides": {"conv": "edge"}}' \\
        --csv table.csv --html table.html

Per variant (FOLDER is its branch, results/<run>/ablation/<variant>/): top-1 and top-5 of the evaluation
and the deployed model's top-1 and parity gate (summary.json), params, MACs and in-framework img/s
(model/profile.json), training wall time (benchmarks/train.tsv) and epochs (train/metrics.jsonl).
Both tables are written atomically.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, run_cli  # noqa: E402


def build_parser():
    parser = Parser(description=__doc__)
    parser.add_argument("--variant", nargs=3, action="append", required=True, metavar=("NAME", "FOLDER", "CHANGES"),
                        help="a variant, its branch folder and its config changes as JSON; repeatable, in table order")
    parser.add_argument("--csv", required=True, help="the table as CSV")
    parser.add_argument("--html", required=True, help="the table as an HTML page (the report shows it)")
    parser.add_argument("--title", default="Ablation", help="the page's heading")
    return parser


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from vig.ablation import branch_row, table_csv, table_html
    from vig.io import write_text

    rows = []
    for name, folder, changes in args.variant:
        try:
            changes = json.loads(changes)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--variant {name}: CHANGES {changes!r} is not JSON ({exc})") from None
        rows.append(branch_row(name, changes, folder))
        print(f"[ablation] {name}: top-1 {rows[-1]['top1']:.4f}, parity {rows[-1]['parity']}", flush=True)
    write_text(args.csv, table_csv(rows))
    write_text(args.html, table_html(rows, args.title))
    print(f"[ablation] {len(rows)} variants -> {args.csv}, {args.html}", flush=True)
    return 0


def main(argv=None) -> int:
    return run_cli(run, argv, prog="ablation_table.py", bad_input=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
