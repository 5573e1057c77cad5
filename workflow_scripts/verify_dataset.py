#!/usr/bin/env python
"""Check an ImageNet-format dataset and write its manifest; on any problem list them all and write nothing.

    python workflow_scripts/verify_dataset.py --data_url /data/imagenet --output dataset/manifest.json --workers 16

Fails on: a missing split, a file or folder where a class folder's images belong, an empty class,
classes that differ between splits, duplicate val file names, a zero-byte, non-image or undecodable
(truncated) file. By default each image is header-checked (plus an end-marker check that catches
truncated JPEG/PNG files); --full_decode decodes every image completely.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, run_cli  # noqa: E402
from vig.io import write_json  # noqa: E402
from vig.verify import DatasetError, verify_dataset  # noqa: E402


def run(argv=None) -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--data_url", required=True, help="dataset root holding <split>/<class>/<image files>")
    parser.add_argument("--output", required=True, help="manifest JSON to write (only if every check passes)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="split folders (default: train val)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="parallel checker processes (default: all CPUs)")
    parser.add_argument("--full_decode", action="store_true",
                        help="decode every image completely (PIL verify + load) instead of the header check")
    parser.add_argument("--progress_every", type=int, default=10000,
                        help="print a progress line every N files (default 10000)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.progress_every < 1:
        parser.error("--workers and --progress_every must be >= 1")

    manifest = verify_dataset(args.data_url, args.splits, args.workers, args.full_decode, args.progress_every)
    write_json(args.output, manifest)
    counts = ", ".join(f"{s} {c['total']}" for s, c in manifest["counts"].items())
    print(f"[verify] OK: {manifest['num_classes']} classes, {counts} images -> {args.output}")


def main(argv=None) -> int:
    return run_cli(run, argv, prog="verify_dataset.py", bad_input=(DatasetError, ValueError, FileNotFoundError),
                   failures=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
