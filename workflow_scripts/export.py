#!/usr/bin/env python
"""Export a trained checkpoint as MINDIR with a dynamic batch dimension (input [None, 3, S, S] float32).

    python workflow_scripts/export.py --vig_config config/models/vig_s_patch16_224.yaml \\
        --pretrained vig_s.ckpt --output export/vig_s_patch16_224.mindir

The weights (a checkpoint of this project or an original PyTorch .pth; --checkpoint is the same option)
must hold every parameter of the configured network (optimizer state and bookkeeping entries are
ignored). The network is built with MindSpore's own ops (no compiled CPU kernels), so the file runs on
any backend, and it is checked against the network for batch sizes 2 and 1 before it is
moved into place. Device: the config's device_target (e.g. --set device_target=CPU).
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # before MindSpore is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.deploy.cli import add_config_arguments, load_config, run, set_device  # noqa: E402
from vig.weights import add_pretrained_argument, pretrained_path  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    add_pretrained_argument(parser, "; --checkpoint is the same option", aliases=("--checkpoint",))
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="file to write, e.g. export/vig_s_patch16_224.mindir (written atomically)")
    parser.add_argument("--file_format", default="MINDIR", choices=["MINDIR", "AIR", "ONNX"],
                        help="MINDIR (default; runs everywhere); AIR needs an Ascend device")
    parser.add_argument("--no_check", action="store_true",
                        help="skip running the exported file against the network (batch sizes 2 and 1)")
    args = parser.parse_args(argv)

    def export():
        from vig.deploy.export import export_model

        cfg = load_config(args)
        weights = pretrained_path(args, cfg, required=True)
        set_device(cfg)
        export_model(cfg, weights, args.output, args.file_format, check=not args.no_check)

    run(export, "export")


if __name__ == "__main__":
    main()
