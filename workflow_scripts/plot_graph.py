#!/usr/bin/env python
"""Draw the patch graph trained ViG weights build (the paper's Fig. 4) and measure its health per block.

    python workflow_scripts/plot_graph.py --vig_config config/models/vig_demo.yaml \\
        --pretrained out/vig_demo.ckpt --data_url data/demo --graph_png patch_graph.png \\
        --health_png graph_health.png --health_json graph_health.json

Images: the first image of each of the first --num_classes classes of --split (default 4), or the
--images given (paths relative to the split folder). The neighbours drawn are the model's own kNN
indices (vig/graph_view.py). The JSON lists per block the mean node-neighbour distance in patches and
the mean cosine similarity between node features. Every output is written atomically.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # before MindSpore is imported anywhere
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser  # noqa: E402
from vig.config import add_config_arguments, config_from_args  # noqa: E402
from vig.train.cli import UsageError, add_data_argument, check_data_dir, run_cli  # noqa: E402
from vig.weights import add_pretrained_argument, pretrained_path  # noqa: E402


def build_parser():
    parser = Parser(description=__doc__)
    add_config_arguments(parser)
    add_data_argument(parser)
    add_pretrained_argument(parser, "; --checkpoint is the same option", aliases=("--checkpoint",))
    parser.add_argument("--split", default="val", help="sub-folder of --data_url to draw from (default %(default)s)")
    parser.add_argument("--num_classes", type=int, default=4, metavar="N",
                        help="first image of each of the first N classes (default %(default)s)")
    parser.add_argument("--images", nargs="*", default=None, metavar="CLASS/FILE",
                        help="draw these images instead (paths relative to the split folder)")
    parser.add_argument("--graph_png", required=True, help="patch-graph picture to write")
    parser.add_argument("--health_png", required=True, help="graph-health plot to write")
    parser.add_argument("--health_json", required=True, help="per-block graph-health numbers to write")
    return parser


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    data_url = args.data_url or cfg["data_url"]
    check_data_dir(data_url, (args.split,))
    weights = pretrained_path(args, cfg, required=True)
    if args.num_classes < 1:
        raise UsageError(f"--num_classes {args.num_classes}: expected a positive integer")

    import mindspore as ms

    from vig.deploy.cli import set_device
    from vig.graph_view import write_graph_view

    set_device(cfg, graph_mode=False)  # block by block: PyNative, no graph compiled per cell
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        write_graph_view(cfg, weights, os.path.join(data_url, args.split), args.graph_png, args.health_png,
                         args.health_json, args.num_classes, args.images, log=lambda m: print(m, flush=True))
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    print(f"[plot_graph] wrote {args.graph_png}, {args.health_png}, {args.health_json}", flush=True)
    return 0


def main(argv=None) -> int:
    return run_cli(run, argv, prog="plot_graph.py")


if __name__ == "__main__":
    sys.exit(main())
