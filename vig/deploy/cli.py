"""Shared pieces of the deployment CLIs (workflow_scripts/*.py): the model config options and error exit."""
from __future__ import annotations

import os
import sys

from ..config import add_config_arguments, config_from_args as load_config  # noqa: F401  (re-exported)


def set_device(cfg: dict, graph_mode: bool = True) -> None:
    """The config's device (device_id too, off CPU) and GRAPH_MODE, before any network is built."""
    import mindspore as ms

    target = cfg.get("device_target", "CPU")
    if target == "CPU":
        from ..runtime import set_cpu_threads

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
