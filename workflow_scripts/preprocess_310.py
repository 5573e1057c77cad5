#!/usr/bin/env python
"""The seed's Ascend-310 preprocessing: one float32 NCHW .bin per image and the label file.

    python workflow_scripts/preprocess_310.py --vig_config config/models/vig_s_patch16_224.yaml \\
        --data_url /data/imagenet --split val --output_dir preprocess_Result/images \\
        --labels preprocess_Result/imagenet_label.json

OUTPUT_DIR/<file stem>.bin holds (1, 3, S, S) float32: the image after the evaluation transform
(resize the short side to S / crop_pct, centre crop S, normalise), exactly what evaluation feeds the
network. LABELS is {"<file name>": class index} with class index = position in the sorted class names.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # before MindSpore is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, run_cli  # noqa: E402
from vig.config import add_config_arguments, config_from_args  # noqa: E402


def run(argv=None) -> None:
    parser = Parser(description=__doc__)
    add_config_arguments(parser)
    parser.add_argument("--data_url", required=True, metavar="DIR", help="dataset root holding SPLIT/<class>/*")
    parser.add_argument("--split", default="val", help="split folder to preprocess (default val)")
    parser.add_argument("--output_dir", required=True, metavar="BINDIR",
                        help="folder of .bin files to create (built beside it, then moved in)")
    parser.add_argument("--labels", required=True, metavar="JSON", help="label file to write (imagenet_label.json)")
    parser.add_argument("--progress_every", type=int, default=1000, help="progress line every N images")
    args = parser.parse_args(argv)

    from vig.deploy.preprocess import preprocess_split

    cfg = config_from_args(args)
    preprocess_split(cfg, args.data_url, args.split, args.output_dir, args.labels, args.progress_every)


def main(argv=None) -> int:
    return run_cli(run, argv, prog="preprocess_310.py", bad_input=(ValueError, FileNotFoundError),
                   failures=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
