"""Shared pieces of the deployment CLIs (workflow_scripts/*.py): the model config options and error exit."""
from __future__ import annotations

import argparse
import os
import sys


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--vig_config YAML and repeatable --set KEY=VALUE, as in train.py/eval.py."""
    parser.add_argument("--vig_config", "--config", dest="vig_config", required=True, metavar="YAML",
                        help="model YAML (config/models/*.yaml; the seed's keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key with a YAML value, e.g. --set device_target=CPU; repeatable")


def load_config(args) -> dict:
    from ..config import load_model_config, parse_override

    return load_model_config(args.vig_config, dict(parse_override(item) for item in args.overrides))


def set_device(cfg: dict, graph_mode: bool = True) -> None:
    """The config's device (device_id too, off CPU) and GRAPH_MODE, before any network is built."""
    import mindspore as ms

    target = cfg.get("device_target", "CPU")
    if target == "CPU":
        from ..models.kernels import set_cpu_threads

        ms.set_device(target)
        set_cpu_threads()  # one op thread per core instead of MindSpore's 25
    else:
        ms.set_device(target, int(os.environ.get("DEVICE_ID", cfg.get("device_id", 0))))
    if graph_mode:
        ms.set_context(mode=ms.GRAPH_MODE)


def run(main, prog: str, errors=(ValueError, FileNotFoundError, RuntimeError)) -> None:
    """Call main(); an expected error becomes one 'prog: error: ...' message and exit status 1."""
    try:
        main()
    except errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(1)
