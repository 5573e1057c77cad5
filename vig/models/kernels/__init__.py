"""Compiled CPU kernels for ViG, exposed as `mindspore.ops.Custom` primitives with gradients.

MindSpore 2.10's own CPU kernels for exact GELU, top-k, max over gathered neighbours, the pieces of a
k x k convolution, BatchNorm, channel sums and even 1x1 convolutions are 2-100x slower than PyTorch's
(docs/performance.md). The C++ sources (vig/ops/csrc) are compiled with g++ on first use by
vig/ops/build.py. Matrix products call oneDNN's sgemm from the libdnnl.so.3 that MindSpore ships.

Every getter returns None when the kernels cannot be used: not on CPU, `VIG_NATIVE_OPS=1` in the
environment, or no working g++ (a warning is logged once). Callers then use the native MindSpore op,
which computes the same function (GPU and Ascend always take that path).
"""
from __future__ import annotations

import functools
import os

import numpy as np
import mindspore as ms
from mindspore import ops

from ...ops.build import library


def enabled() -> bool:
    """Whether the compiled kernels should be used in cells built now."""
    if os.environ.get("VIG_NATIVE_OPS", "0") not in ("", "0"):
        return False
    try:
        return ms.get_context("device_target") == "CPU"
    except Exception:  # pragma: no cover - context not initialised
        return False


def _custom(source: str, func: str, out_shape, out_dtype, bprop=None, variant: str = ""):
    lib = library(source)
    if lib is None:
        return None
    op = ops.Custom(f"{lib}:{func}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot", bprop=bprop)
    # PyNative caches shape inference per primitive attributes: instances whose output shape depends on
    # their own settings (k, stride, ...) must differ in an attribute, or they get each other's shapes.
    op.add_prim_attr("vig_variant", f"{func}:{variant}")
    return op


def geometry(*values: int) -> ms.Tensor:
    """The int32 parameter vector some kernels take as their last input."""
    return ms.Tensor(np.array(values, np.int32))


# ---------------------------------------------------------------------------------------------------
# Primitive factories (None = use the native op). Built once per process and shared by all cells.
# ---------------------------------------------------------------------------------------------------
def gelu():
    """Exact GELU, x -> x * Phi(x)."""
    return _gelu() if enabled() else None


@functools.lru_cache(maxsize=None)
def _gelu():
    backward = _custom("vig_gelu.cc", "GeluBackward", lambda x, dy: x, lambda x, dy: x)
    if backward is None:
        return None

    def bprop(x, out, dout):
        return (backward(x, dout),)

    return _custom("vig_gelu.cc", "GeluForward", lambda x: x, lambda x: x, bprop)


def im2col(kernel_size: int, stride: int, padding: int):
    """(x (B, C, H, W), geometry(k, s, p)) -> cols (B, k*k*C, Ho, Wo), channel (dy*k + dx)*C + c."""
    return _im2col(kernel_size, stride, padding) if enabled() else None


@functools.lru_cache(maxsize=None)
def _im2col(kernel_size: int, stride: int, padding: int):
    k, s, p = kernel_size, stride, padding

    def cols_shape(x, geo):
        return [x[0], k * k * x[1], (x[2] + 2 * p - k) // s + 1, (x[3] + 2 * p - k) // s + 1]

    col2im = _custom("vig_cpu_kernels.cc", "Col2Im", lambda dcols, geo, x: x, lambda dcols, geo, x: dcols)
    if col2im is None:
        return None

    def bprop(x, geo, out, dout):
        return col2im(dout, geo, x), ops.zeros_like(geo)

    return _custom("vig_cpu_kernels.cc", "Im2Col", cols_shape, lambda x, geo: x, bprop, f"{k},{s},{p}")


def max_relative():
    """(x (B, C, N, 1), y (B, C, M, 1), idx (B, N, k) int32) -> (out (B, 2C, N, 1), argmax (B, C, N, 1) int32):
    MRConv's features, channel 2c = x[c] and 2c+1 = max_j y[b, c, idx[b, n, j]] - x[c]."""
    return _max_relative() if enabled() else None


@functools.lru_cache(maxsize=None)
def _max_relative():
    def out_shape(x, y, idx):
        return [x[0], 2 * x[1], x[2], 1], [x[0], x[1], x[2], 1]

    backward = _custom("vig_cpu_kernels.cc", "MaxRelativeBackward", lambda dout, arg, y: ([y[0], y[1], arg[2], 1], y),
                       lambda dout, arg, y: (dout, dout))
    if backward is None:
        return None

    def bprop(x, y, idx, out, dout):
        dx, dy = backward(dout[0], out[1], y)
        return dx, dy, ops.zeros_like(idx)

    return _custom("vig_cpu_kernels.cc", "MaxRelative", out_shape, (ms.float32, ms.int32), bprop)


def dilated_knn(k: int, with_relative_pos: bool):
    """(x (B, C, N, 1), y (B, C, M, 1)[, rel (1, N, M)], geometry(k, d)) -> idx (B, N, k) int32: the k*d
    nearest keys after L2 normalisation (plus rel), every d-th. No gradient (indices)."""
    return _dilated_knn(k, with_relative_pos) if enabled() else None


@functools.lru_cache(maxsize=None)
def _dilated_knn(k: int, with_relative_pos: bool):
    if with_relative_pos:
        def out_shape(x, y, rel, geo):
            return [x[0], x[2], k]

        def bprop(x, y, rel, geo, out, dout):
            return ops.zeros_like(x), ops.zeros_like(y), ops.zeros_like(rel), ops.zeros_like(geo)

        return _custom("vig_cpu_kernels.cc", "DilatedKnnRel", out_shape, ms.int32, bprop, str(k))

    def out_shape(x, y, geo):
        return [x[0], x[2], k]

    def bprop(x, y, geo, out, dout):
        return ops.zeros_like(x), ops.zeros_like(y), ops.zeros_like(geo)

    return _custom("vig_cpu_kernels.cc", "DilatedKnn", out_shape, ms.int32, bprop, str(k))


def batch_norm_train():
    """(x (B, C, ...), gamma, beta, moving_mean, moving_var (C), hyper [eps, momentum]) -> (y, mean, invstd,
    new moving_mean, new moving_var): training-mode BatchNorm with batch statistics and the running
    statistics' update; the gradient flows to x, gamma and beta through y only."""
    return _batch_norm_train() if enabled() else None


@functools.lru_cache(maxsize=None)
def _batch_norm_train():
    backward = _custom("vig_norm.cc", "BatchNormTrainGrad", lambda dy, x, gamma, mean, invstd: (x, gamma, gamma),
                       lambda dy, x, gamma, mean, invstd: (x, gamma, gamma))
    if backward is None:
        return None

    def bprop(x, gamma, beta, moving_mean, moving_var, hyper, out, dout):
        dx, dgamma, dbeta = backward(dout[0], x, gamma, out[1], out[2])
        return (dx, dgamma, dbeta, ops.zeros_like(moving_mean), ops.zeros_like(moving_var),
                ops.zeros_like(hyper))

    def shapes(x, gamma, beta, moving_mean, moving_var, hyper):
        return x, gamma, gamma, gamma, gamma

    return _custom("vig_norm.cc", "BatchNormTrain", shapes, shapes, bprop)


def bias_add():
    """(x (B, C, ...), bias (C)) -> x + bias per channel; its gradient sums dy per channel in one pass
    (the ReduceSum autodiff emits for a broadcast add is ~100x slower on CPU)."""
    return _bias_add() if enabled() else None


@functools.lru_cache(maxsize=None)
def _bias_add():
    backward = _custom("vig_norm.cc", "BiasAddGrad", lambda dy, bias: bias, lambda dy, bias: bias)
    if backward is None:
        return None

    def bprop(x, bias, out, dout):
        return dout, backward(dout, bias)

    return _custom("vig_norm.cc", "BiasAdd", lambda x, bias: x, lambda x, bias: x, bprop)


def conv1x1(groups: int):
    """(x (B, Cin, H, W), w (Cout, Cin/groups, 1, 1), geometry(groups)) -> y (B, Cout, H, W): a 1x1
    convolution without bias, one sgemm per image and group; gradients for x and w."""
    return _conv1x1(groups) if enabled() else None


@functools.lru_cache(maxsize=None)
def _conv1x1(groups: int):
    backward_input = _custom("vig_gemm.cc", "Conv1x1BackwardInput", lambda dy, w, geo, x: x,
                             lambda dy, w, geo, x: dy)
    backward_weight = _custom("vig_gemm.cc", "Conv1x1BackwardWeight", lambda dy, x, geo, w: w,
                              lambda dy, x, geo, w: dy)
    if backward_input is None or backward_weight is None:
        return None

    def bprop(x, w, geo, out, dout):
        return backward_input(dout, w, geo, x), backward_weight(dout, x, geo, w), ops.zeros_like(geo)

    def out_shape(x, w, geo):
        return [x[0], w[0], x[2], x[3]]

    return _custom("vig_gemm.cc", "Conv1x1", out_shape, lambda x, w, geo: x, bprop, str(groups))


def square_sum():
    """g (float32, any shape) -> (1,) sum of squares (accumulated in double). No gradient (train-step use)."""
    return _square_sum() if enabled() else None


@functools.lru_cache(maxsize=None)
def _square_sum():
    return _custom("vig_norm.cc", "SquareSum", lambda g: [1], lambda g: g)


def scale():
    """(g (float32, any shape), factor (1,)) -> g * factor. No gradient (train-step use)."""
    return _scale() if enabled() else None


@functools.lru_cache(maxsize=None)
def _scale():
    return _custom("vig_norm.cc", "Scale", lambda g, f: g, lambda g, f: g)
