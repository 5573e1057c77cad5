"""Process-wide MindSpore runtime settings the CLIs apply before building a network."""
from __future__ import annotations

import os


def set_cpu_threads(num: int | None = None) -> int | None:
    """Give MindSpore's CPU kernels one thread per available core (or `num`).

    MindSpore 2.10 defaults to 25 CPU op threads whatever the machine; on a 2-core box that
    oversubscription made a ViG-Ti forward 3x slower (docs/performance.md). Call once, after
    `ms.set_device("CPU")` and before the first graph runs. Returns the count set, or None when not on
    CPU or already configured (MindSpore allows setting it only once per process).
    """
    import mindspore as ms

    if ms.get_context("device_target") != "CPU":
        return None
    count = num or len(os.sched_getaffinity(0))
    try:
        ms.device_context.cpu.op_tuning.threads_num(count)
    except RuntimeError:  # already set in this process
        return None
    return count
