"""Shared pieces of the deployment CLIs (workflow_scripts/*.py): the device and the error exit."""
from __future__ import annotations

from ..cli import run_cli


def set_device(cfg: dict, graph_mode: bool = True, threads: int | None = None) -> None:
    """The config's device (device_id too, off CPU) and GRAPH_MODE, before any network is built; on CPU
    `threads` op threads (default one per available core)."""
    import mindspore as ms

    target = cfg.get("device_target", "CPU")
    if target == "CPU":
        from ..runtime import set_cpu_threads

        ms.set_device(target)
        set_cpu_threads(threads)  # one op thread per core instead of MindSpore's 25
    else:
        from ..train.distributed import device_id_of

        ms.set_device(target, device_id_of(cfg["device_id"]))
    if graph_mode:
        ms.set_context(mode=ms.GRAPH_MODE)


def run(work, prog: str, bad_input=(ValueError, FileNotFoundError), failures=(RuntimeError,)) -> int:
    """Call work() under the CLIs' one convention (vig.cli): bad input exits 2, a failed run 1, both as
    one 'prog: error: ...' line. Returns the exit status."""
    def call(_argv) -> int:
        work()  # what it returns (a summary, a path) is no exit status
        return 0

    return run_cli(call, prog=prog, bad_input=bad_input, failures=failures)
