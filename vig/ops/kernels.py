"""The ops as compiled CPU kernels: `mindspore.ops.Custom(func_type="aot")` primitives with a Python bprop.

MindSpore 2.10's own CPU kernels for exact GELU, top-k, max over gathered neighbours, the pieces of a
k x k convolution, BatchNorm, channel sums and even 1x1 convolutions are 2-100x slower than PyTorch's
(docs/performance.md). The C++ sources are in csrc/, compiled on first use by build.py; matrix products
call oneDNN's sgemm from the libdnnl.so.3 MindSpore ships.

Each cell computes the same function as its namesake in native.py and keeps one as `fallback` for
inputs that are not float32 (the kernels are float32-only; e.g. amp O3's float16). A cell is only built
where `usable` holds: on CPU, with the libraries compiled, for the configurations the kernel covers.
Primitives are built once per process and shared by all cells.
"""
from __future__ import annotations

import functools

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from . import native
from .build import library

IMPLEMENTATION = "kernel"


def _custom(source: str, func: str, out_shape, out_dtype, bprop=None, variant: str = ""):
    op = ops.Custom(f"{library(source)}:{func}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot",
                    bprop=bprop)
    # PyNative caches shape inference per primitive attributes: instances whose output shape depends on
    # their own settings (k, stride, ...) must differ in an attribute, or they get each other's shapes.
    op.add_prim_attr("vig_variant", f"{func}:{variant}")
    return op


def geometry(*values: int) -> ms.Tensor:
    """The int32 parameter vector some kernels take as their last input."""
    return ms.Tensor(np.array(values, np.int32))


def on_cpu() -> bool:
    try:
        return ms.get_context("device_target") == "CPU"
    except Exception:  # pragma: no cover - context not initialised
        return False


class KernelOp(nn.Cell):
    """Base of the kernel cells: `sources` to compile, `fallback` = the native cell for other dtypes."""

    implementation = IMPLEMENTATION
    sources: tuple[str, ...] = ()
    native_class: type[native.NativeOp]

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.fallback = self.native_class(*args, **kwargs)

    @classmethod
    def supports(cls, *args, **kwargs) -> bool:
        """Whether the kernel covers this configuration (all by default)."""
        return True

    @classmethod
    def usable(cls, *args, **kwargs) -> bool:
        return on_cpu() and cls.supports(*args, **kwargs) and all(library(s) is not None for s in cls.sources)


# ---------------------------------------------------------------------------------------------------
# Primitives (cached per process)
# ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _gelu():
    backward = _custom("vig_gelu.cc", "GeluBackward", lambda x, dy: x, lambda x, dy: x)

    def bprop(x, out, dout):
        return (backward(x, dout),)

    return _custom("vig_gelu.cc", "GeluForward", lambda x: x, lambda x: x, bprop)


@functools.lru_cache(maxsize=None)
def _im2col(kernel_size: int, stride: int, padding: int):
    """(x (B, C, H, W), geometry(k, s, p)) -> cols (B, k*k*C, Ho, Wo), channel (dy*k + dx)*C + c."""
    k, s, p = kernel_size, stride, padding

    def cols_shape(x, geo):
        return [x[0], k * k * x[1], (x[2] + 2 * p - k) // s + 1, (x[3] + 2 * p - k) // s + 1]

    col2im = _custom("vig_cpu_kernels.cc", "Col2Im", lambda dcols, geo, x: x, lambda dcols, geo, x: dcols)

    def bprop(x, geo, out, dout):
        return col2im(dout, geo, x), ops.zeros_like(geo)

    return _custom("vig_cpu_kernels.cc", "Im2Col", cols_shape, lambda x, geo: x, bprop, f"{k},{s},{p}")


@functools.lru_cache(maxsize=None)
def _conv1x1(groups: int):
    """(x (B, Cin, H, W), w (Cout, Cin/groups, 1, 1), geometry(groups)) -> y (B, Cout, H, W): one sgemm per
    image and group; gradients for x and w."""
    backward_input = _custom("vig_gemm.cc", "Conv1x1BackwardInput", lambda dy, w, geo, x: x,
                             lambda dy, w, geo, x: dy)
    backward_weight = _custom("vig_gemm.cc", "Conv1x1BackwardWeight", lambda dy, x, geo, w: w,
                              lambda dy, x, geo, w: dy)

    def bprop(x, w, geo, out, dout):
        return backward_input(dout, w, geo, x), backward_weight(dout, x, geo, w), ops.zeros_like(geo)

    def out_shape(x, w, geo):
        return [x[0], w[0], x[2], x[3]]

    return _custom("vig_gemm.cc", "Conv1x1", out_shape, lambda x, w, geo: x, bprop, str(groups))


@functools.lru_cache(maxsize=None)
def _bias_add():
    """Its gradient sums dy per channel in one pass (the ReduceSum autodiff emits for a broadcast add is
    ~100x slower on CPU)."""
    backward = _custom("vig_norm.cc", "BiasAddGrad", lambda dy, bias: bias, lambda dy, bias: bias)

    def bprop(x, bias, out, dout):
        return dout, backward(dout, bias)

    return _custom("vig_norm.cc", "BiasAdd", lambda x, bias: x, lambda x, bias: x, bprop)


@functools.lru_cache(maxsize=None)
def _batch_norm_train():
    """(x, gamma, beta, moving_mean, moving_var, hyper [eps, momentum]) -> (y, mean, invstd, new moving_mean,
    new moving_var); the gradient flows to x, gamma and beta through y only."""
    backward = _custom("vig_norm.cc", "BatchNormTrainGrad", lambda dy, x, gamma, mean, invstd: (x, gamma, gamma),
                       lambda dy, x, gamma, mean, invstd: (x, gamma, gamma))

    def bprop(x, gamma, beta, moving_mean, moving_var, hyper, out, dout):
        dx, dgamma, dbeta = backward(dout[0], x, gamma, out[1], out[2])
        return (dx, dgamma, dbeta, ops.zeros_like(moving_mean), ops.zeros_like(moving_var),
                ops.zeros_like(hyper))

    def shapes(x, gamma, beta, moving_mean, moving_var, hyper):
        return x, gamma, gamma, gamma, gamma

    return _custom("vig_norm.cc", "BatchNormTrain", shapes, shapes, bprop)


@functools.lru_cache(maxsize=None)
def _dilated_knn(k: int, with_relative_pos: bool):
    """(x, y[, rel], geometry(k, d)) -> idx (B, N, k) int32. No gradient (indices)."""
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


@functools.lru_cache(maxsize=None)
def _max_relative():
    """(x, y, idx) -> (out (B, 2C, N, 1), argmax (B, C, N, 1) int32, kept for the gradient)."""
    def out_shape(x, y, idx):
        return [x[0], 2 * x[1], x[2], 1], [x[0], x[1], x[2], 1]

    backward = _custom("vig_cpu_kernels.cc", "MaxRelativeBackward", lambda dout, arg, y: ([y[0], y[1], arg[2], 1], y),
                       lambda dout, arg, y: (dout, dout))

    def bprop(x, y, idx, out, dout):
        dx, dy = backward(dout[0], out[1], y)
        return dx, dy, ops.zeros_like(idx)

    return _custom("vig_cpu_kernels.cc", "MaxRelative", out_shape, (ms.float32, ms.int32), bprop)


@functools.lru_cache(maxsize=None)
def _square_sum():
    """g -> (1,) sum of squares, accumulated in double. No gradient (train-step use)."""
    return _custom("vig_norm.cc", "SquareSum", lambda g: [1], lambda g: g)


@functools.lru_cache(maxsize=None)
def _scale():
    """(g, factor (1,)) -> g * factor. No gradient (train-step use)."""
    return _custom("vig_norm.cc", "Scale", lambda g, f: g, lambda g, f: g)


# ---------------------------------------------------------------------------------------------------
# Cells: the same signatures as native.py's
# ---------------------------------------------------------------------------------------------------
class Gelu(KernelOp):
    """15x faster than MindSpore's Erf on CPU, the same values to ~1e-6."""

    sources, native_class = ("vig_gelu.cc",), native.Gelu

    def __init__(self):
        super().__init__()
        self.gelu = _gelu()

    def construct(self, x):
        if x.dtype == ms.float32:
            return self.gelu(x)
        return self.fallback(x)


class PointwiseConv(KernelOp):
    sources, native_class = ("vig_gemm.cc",), native.PointwiseConv

    def __init__(self, groups: int):
        super().__init__(groups)
        self.conv1x1, self.groups = _conv1x1(groups), geometry(groups)

    def construct(self, x, weight):
        if x.dtype == ms.float32:
            return self.conv1x1(x, weight, self.groups)
        return self.fallback(x, weight)


class Im2Col(KernelOp):
    """The same cols as native.Im2Col's slices, so both feed the same product (bit-identical convs)."""

    sources, native_class = ("vig_cpu_kernels.cc",), native.Im2Col

    def __init__(self, kernel_size: int, stride: int, padding: int):
        super().__init__(kernel_size, stride, padding)
        self.im2col, self.geometry = _im2col(kernel_size, stride, padding), geometry(kernel_size, stride, padding)

    def construct(self, x):
        if x.dtype == ms.float32:
            return self.im2col(x, self.geometry)
        return self.fallback(x)


class BiasAdd(KernelOp):
    sources, native_class = ("vig_norm.cc",), native.BiasAdd

    def __init__(self):
        super().__init__()
        self.bias_add = _bias_add()

    def construct(self, x, bias):
        if x.dtype == ms.float32:
            return self.bias_add(x, bias)
        return self.fallback(x, bias)


class BatchNorm(KernelOp):
    """Training-mode BatchNorm: batch statistics, normalisation and gradient in one kernel each, several
    times faster than MindSpore's CPU BatchNorm; the same kernel updates the running statistics as
    MindSpore's does (unbiased variance, `momentum` weighting the batch). Eval uses the native op."""

    sources, native_class = ("vig_norm.cc",), native.BatchNorm

    def __init__(self, eps: float, momentum: float):
        super().__init__(eps, momentum)
        self.batch_norm = _batch_norm_train()
        self.hyper = ms.Tensor([eps, momentum], ms.float32)

    def construct(self, x, gamma, beta, moving_mean, moving_var):
        if self.training and x.dtype == ms.float32:
            y, _, _, new_mean, new_var = self.batch_norm(x, gamma, beta, moving_mean, moving_var, self.hyper)
            y = ops.depend(y, ops.assign(moving_mean, ops.stop_gradient(new_mean)))
            return ops.depend(y, ops.assign(moving_var, ops.stop_gradient(new_var)))
        return self.fallback(x, gamma, beta, moving_mean, moving_var)


class DilatedKnn(KernelOp):
    """Normalise + distance + top-k + dilation fused, ties to the lower key index. The stochastic
    variant needs all k*d candidates, so it keeps the native ops."""

    sources, native_class = ("vig_cpu_kernels.cc",), native.DilatedKnn

    @classmethod
    def supports(cls, k: int, dilation: int, stochastic: bool = False, epsilon: float = 0.0) -> bool:
        return not stochastic

    def __init__(self, k: int, dilation: int, stochastic: bool = False, epsilon: float = 0.0):
        super().__init__(k, dilation, stochastic, epsilon)
        self.knn, self.knn_rel = _dilated_knn(k, False), _dilated_knn(k, True)
        self.geometry = geometry(k, dilation)

    def construct(self, x, y=None, relative_pos=None):
        if x.dtype != ms.float32:
            return self.fallback(x, y, relative_pos)
        x = ops.stop_gradient(x)
        keys = x if y is None else ops.stop_gradient(y)
        if relative_pos is None:
            return ops.stop_gradient(self.knn(x, keys, self.geometry))
        return ops.stop_gradient(self.knn_rel(x, keys, relative_pos, self.geometry))


class MaxRelative(KernelOp):
    """Gather + max + subtract + interleave fused; the argmax it keeps routes the gradient."""

    sources, native_class = ("vig_cpu_kernels.cc",), native.MaxRelative

    def __init__(self):
        super().__init__()
        self.max_relative = _max_relative()

    def construct(self, x, y, idx):
        keys = x if y is None else y
        if keys.dtype == ms.float32:
            return self.max_relative(x, keys, idx)[0]
        return self.fallback(x, y, idx)


class SquareSum(KernelOp):
    sources, native_class = ("vig_norm.cc",), native.SquareSum

    def __init__(self):
        super().__init__()
        self.square_sum = _square_sum()

    def construct(self, grad):
        if grad.dtype == ms.float32:
            return self.square_sum(grad).reshape(())
        return self.fallback(grad)


class Scale(KernelOp):
    sources, native_class = ("vig_norm.cc",), native.Scale

    def __init__(self):
        super().__init__()
        self.scale = _scale()

    def construct(self, grad, factor):
        if grad.dtype == ms.float32:
            return self.scale(grad, factor.reshape((1,)))
        return self.fallback(grad, factor)
