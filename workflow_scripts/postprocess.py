#!/usr/bin/env python
"""Top-1/top-5 accuracy of the 310 result files, printed in the seed's form and written as JSON.

    python workflow_scripts/postprocess.py --result_dir result_Files \\
        --labels preprocess_Result/imagenet_label.json --output accuracy.json

Results (<stem>_0.bin, float32 logits) and labels ({"<file name>": class index}) are matched by file
stem; a result without a label or a label without a result is an error that lists them. With
--predictions, every image's top-5 classes and logits are written too (vig/predictions.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, run_cli  # noqa: E402
from vig.io import write_json  # noqa: E402
from vig.deploy.postprocess import print_seed_form, score  # noqa: E402
from vig.predictions import write_predictions  # noqa: E402


def run(argv=None) -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--result_dir", default="./result_Files", help="folder of <stem>_0.bin logits")
    parser.add_argument("--labels", default="./preprocess_Result/imagenet_label.json",
                        help="label file {\"<file name>\": class index}")
    parser.add_argument("--output", required=True, metavar="JSON",
                        help="accuracy file: top1, top5, num_images, correct_top1, correct_top5")
    parser.add_argument("--predictions", metavar="JSON",
                        help="also write every image's top-5 classes and logits (for the parity gate)")
    args = parser.parse_args(argv)

    result, per_image = score(args.result_dir, args.labels)
    print_seed_form(result)
    if args.predictions:
        write_predictions(args.predictions, f"deployed model's {args.result_dir}", per_image)
    write_json(args.output, result)


def main(argv=None) -> int:
    return run_cli(run, argv, prog="postprocess.py", bad_input=(ValueError, FileNotFoundError),
                   failures=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
