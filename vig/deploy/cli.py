"""The device of the deployment CLIs (workflow_scripts/*.py), set before any network is built."""
from __future__ import annotations


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

