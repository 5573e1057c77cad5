#!/usr/bin/env python
"""Build the embedded demo dataset: scikit-learn's handwritten digits as an ImageNet-format folder.

    python workflow_scripts/prepare_demo_dataset.py --output resources/demo_digits --image_size 32
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, run_cli  # noqa: E402
from vig.demo_data import build_demo_dataset  # noqa: E402


def run(argv=None) -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--output", required=True,
                        help="dataset root to create: OUTPUT/train/<digit>/*.JPEG and OUTPUT/val/<digit>/*.JPEG "
                             "(built in a temp folder beside it, then moved in; an existing folder is replaced)")
    parser.add_argument("--image_size", type=int, default=32, help="side of the square RGB images (default 32)")
    parser.add_argument("--val_fraction", type=float, default=0.2,
                        help="share of each class put in val, stratified (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    args = parser.parse_args(argv)
    build_demo_dataset(args.output, args.image_size, args.val_fraction, args.seed)


def main(argv=None) -> int:
    return run_cli(run, argv, prog="prepare_demo_dataset.py", bad_input=(ValueError, FileNotFoundError),
                   failures=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
