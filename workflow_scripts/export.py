#!/usr/bin/env python
"""Export a trained checkpoint as MINDIR or ONNX with a dynamic batch dimension (input [B, 3, S, S] float32).

    python workflow_scripts/export.py --vig_config config/models/vig_s_patch16_224.yaml \\
        --pretrained vig_s.ckpt --output export/vig_s_patch16_224.mindir
    python workflow_scripts/export.py --pretrained vig_s.ckpt --vig_config config/models/vig_s_patch16_224.yaml \\
        --device_target CPU                       # the seed's command: writes ./vig_s_patch16_224.mindir
    python workflow_scripts/export.py --pretrained vig_s.ckpt --vig_config config/models/vig_s_patch16_224.yaml \
        --file_format ONNX                        # writes ./vig_s_patch16_224.onnx, for onnxruntime

The weights (a checkpoint of this project or an original PyTorch .pth; --checkpoint is the same option)
must hold every parameter of the configured network (optimizer state and bookkeeping entries are
ignored). The network is built with MindSpore's own ops (no compiled CPU kernels), so the file runs on
any backend, and it is checked against the network for batch sizes 2 and 1 before it is moved into
place (MINDIR through nn.GraphCell, ONNX through onnxruntime). The format is the config's file_format
(--file_format): MINDIR, ONNX (MindSpore's ONNX exporter, with the ops it cannot map replaced by the
"onnx" ops setting: vig/ops/onnx.py), or AIR on an Ascend machine with device_target Ascend. Device: the
config's device_target and device_id.
"""
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # before MindSpore is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, add_config_key_flags, run_cli, stop_without_device  # noqa: E402
from vig.config import DEFAULTS, add_config_arguments, config_from_args  # noqa: E402
from vig.weights import WeightsError, add_pretrained_argument, pretrained_path  # noqa: E402


def build_parser() -> Parser:
    parser = Parser(description=__doc__)
    add_config_arguments(parser)
    add_pretrained_argument(parser, "; --checkpoint is the same option", aliases=("--checkpoint",))
    parser.add_argument("--output", metavar="PATH",
                        help="file to write, atomically (default, as the seed: <arch>.mindir, .onnx or .air, in "
                             "the current folder)")
    parser.add_argument("--no_check", action="store_true",
                        help="skip running the exported file against the network (batch sizes 2 and 1)")
    add_config_key_flags(parser, DEFAULTS)
    return parser


def run(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    from vig.deploy.export import FILE_SUFFIXES, check_file_format

    output = args.output or f"{cfg['arch']}{FILE_SUFFIXES[cfg['file_format']]}"
    weights = pretrained_path(args, cfg, required=True)
    check_file_format(cfg["file_format"], cfg["device_target"])
    stop_without_device(cfg["device_target"], f"DEVICE_ID={cfg['device_id']} {shlex.join(['python', __file__, *argv])}")

    from vig.deploy.cli import set_device
    from vig.deploy.export import export_model

    set_device(cfg)
    export_model(cfg, weights, output, cfg["file_format"], check=not args.no_check)
    return 0


def main(argv=None) -> int:
    from vig.deploy.export import ExportCheckError

    return run_cli(run, argv, prog="export.py", bad_input=(WeightsError, ValueError, FileNotFoundError),
                   failures=(ExportCheckError,))


if __name__ == "__main__":
    sys.exit(main())
