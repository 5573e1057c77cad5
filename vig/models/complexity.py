"""Parameter and multiply-accumulate counts (what the paper reports as Params and FLOPs)."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor

from .graph import DilatedKnnGraph
from .layers import Conv2d


def count_parameters(model, trainable_only: bool = True) -> int:
    params = model.trainable_params() if trainable_only else model.get_parameters()
    return int(sum(int(np.prod(p.shape)) for p in params))


def count_macs(model, image_size: int | None = None) -> int:
    """Multiply-accumulates of one image's forward pass: every convolution plus the N x M x C matmul of
    each kNN distance (torchprofile-style, as the paper counts)."""
    return trace_forward(model, image_size)["macs"]


def trace_forward(model, image_size: int | None = None, batch_size: int = 1) -> dict:
    """One PyNative eval forward with hooks: MACs per image and the output shape."""
    size = image_size or model.cfg.image_size
    total = [0]

    def conv_hook(cell, inputs, output):
        _, cout, ho, wo = output.shape
        total[0] += cout * ho * wo * (cell.in_channels // cell.groups) * cell.kernel_size ** 2

    def knn_hook(cell, inputs, output):
        x = inputs[0]
        y = inputs[1] if len(inputs) > 1 and inputs[1] is not None else x
        total[0] += x.shape[2] * y.shape[2] * x.shape[1]

    previous_mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    handles = []
    was_training = model.training
    try:
        for _, cell in model.cells_and_names():
            if isinstance(cell, Conv2d):
                handles.append(cell.register_forward_hook(conv_hook))
            elif isinstance(cell, DilatedKnnGraph):
                handles.append(cell.register_forward_hook(knn_hook))
        model.set_train(False)
        out = model(Tensor(np.zeros((batch_size, 3, size, size), np.float32)))
    finally:
        for h in handles:
            h.remove()
        model.set_train(was_training)
        ms.set_context(mode=previous_mode)
    return {"macs": int(total[0]), "output_shape": tuple(out.shape)}  # hooks count one image


def model_complexity(model, with_macs: bool = True) -> dict:
    out = {
        "params_trainable": count_parameters(model, True),
        "params_total": count_parameters(model, False),
    }
    # frozen = BatchNorm running statistics + Pyramid ViG's relative-position buffers
    out["params_relative_pos"] = int(sum(int(np.prod(p.shape)) for p in model.get_parameters()
                                         if p.name.endswith("relative_pos")))
    if with_macs:
        out["macs"] = count_macs(model)
    return out


def forward_throughput(model, batch_size: int, image_size: int | None = None, warmup: int = 2,
                       repeats: int = 10) -> dict:
    """In-framework inference speed: the eval forward pass compiled once (GRAPH_MODE jit), then the
    median wall time of `repeats` batches of random images after `warmup` batches."""
    import statistics
    import time

    size = image_size or model.cfg.image_size
    images = Tensor(np.random.default_rng(0).standard_normal((batch_size, 3, size, size), dtype=np.float32))
    model.set_train(False)

    @ms.jit
    def forward(x):
        return model(x)

    times = []
    for step in range(warmup + repeats):
        start = time.perf_counter()
        forward(images).asnumpy()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"images_per_s": batch_size / median, "batch_size": batch_size, "image_size": size,
            "batch_s_median": median, "repeats": repeats}
