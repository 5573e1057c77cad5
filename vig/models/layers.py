"""Small building blocks shared by the ViG family: convolution, norm, activation, DropPath.

Everything here uses `mindspore.nn` / `mindspore.ops` only (the `mint` kernels are missing on CPU).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import HeNormal, Zero, initializer

from . import kernels


def _on_cpu() -> bool:
    try:
        return ms.get_context("device_target") == "CPU"
    except Exception:  # pragma: no cover - context not initialised yet
        return True


class Conv2d(nn.Cell):
    """2-D convolution with PyTorch's parameter layout and initialisation.

    The weight is always (Cout, Cin/groups, kH, kW) and the bias (Cout,), so checkpoints are the same
    on every backend. On CPU a k×k (k > 1) convolution is computed as an im2col (a compiled kernel from
    vig/models/kernels, or step-1 slices when it is unavailable) followed by one 1×1 convolution:
    MindSpore hands oneDNN plain NCHW tensors, which makes it pick a reference kernel that is 100-300x
    slower than this (see docs/performance.md). 1×1 and grouped convolutions, and every convolution on
    GPU/Ascend, use the native operator. So does inference (eval mode) without the kernel, e.g. the
    exported MINDIR: there the native conv is 5-15x faster than the slices (bench/mindir_throughput.py).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = True, impl: str = "auto"):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: channels {in_channels}->{out_channels} not divisible by groups={groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.groups = kernel_size, stride, padding, groups
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        # kaiming_normal_(fan_in, gain sqrt(2)) as in the original's model_init, bias zero.
        self.weight = Parameter(initializer(HeNormal(mode="fan_in", nonlinearity="relu"), shape, ms.float32),
                                name="weight")
        self.has_bias = bias
        self.bias = Parameter(initializer(Zero(), (out_channels,), ms.float32), name="bias") if bias else None
        auto = impl == "auto"
        if auto:
            impl = "im2col" if (_on_cpu() and kernel_size > 1 and groups == 1) else "native"
        if impl not in ("im2col", "native"):
            raise ValueError(f"Conv2d impl must be 'auto', 'im2col' or 'native', got {impl!r}")
        self.impl = impl
        self.offsets = tuple((dy, dx) for dy in range(kernel_size) for dx in range(kernel_size))
        # The compiled im2col (vig/models/kernels) when available; otherwise the slice-based one below.
        self.im2col_kernel = kernels.im2col(kernel_size, stride, padding) if impl == "im2col" else None
        self.im2col_geometry = kernels.geometry(kernel_size, stride, padding)
        # Training keeps the slices without the kernel: their sums, so the gradients, equal the kernel's.
        self.native_in_eval = auto and self.impl == "im2col" and self.im2col_kernel is None
        self.bias_kernel = kernels.bias_add() if bias else None
        # The 1x1 product (of the input, or of the im2col) as compiled sgemm calls on CPU.
        pointwise = impl == "im2col" or (kernel_size == 1 and stride == 1 and padding == 0)
        product_groups = 1 if impl == "im2col" else groups
        self.conv1x1_kernel = kernels.conv1x1(product_groups) if pointwise else None
        self.conv1x1_groups = kernels.geometry(product_groups)

    def _weight(self, x):
        # amp O2/O3 in GRAPH_MODE casts this cell's input to float16 but leaves the weight float32 here
        # (MindSpore 2.10), and Conv2D rejects mixed input types
        return self.weight if self.weight.dtype == x.dtype else self.weight.astype(x.dtype)

    def _native(self, x):
        if self.conv1x1_kernel is not None and self.kernel_size == 1 and x.dtype == ms.float32:
            return self.conv1x1_kernel(x, self.weight, self.conv1x1_groups)
        return ops.conv2d(x, self._weight(x), None, self.stride, "pad", self.padding, 1, self.groups)

    def _im2col(self, x):
        if self.im2col_kernel is not None and x.dtype == ms.float32:
            cols = self.im2col_kernel(x, self.im2col_geometry)  # the same cols as the slices below
        else:
            cols = self._im2col_slices(x)
        w = self._weight(cols).transpose(0, 2, 3, 1).reshape(self.out_channels, -1, 1, 1)
        if self.conv1x1_kernel is not None and cols.dtype == ms.float32:
            return self.conv1x1_kernel(cols, w, self.conv1x1_groups)
        return ops.conv2d(cols, w, None, 1, "valid", 0, 1, 1)

    def _im2col_slices(self, x):
        # Strided slices are avoided: MindSpore 2.10's CPU StridedSliceGrad fails for step > 1
        # ("input memory out of bounds"). Instead the padded map is split into its s x s phases
        # (a reshape), and each tap is a step-1 slice of one phase.
        k, s, p = self.kernel_size, self.stride, self.padding
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        ho = (h + 2 * p - k) // s + 1
        wo = (w + 2 * p - k) // s + 1
        hp, wp = s * (ho + (k - 1) // s), s * (wo + (k - 1) // s)  # rows/cols the taps can reach
        pad_b, pad_r = max(hp - h - p, 0), max(wp - w - p, 0)
        if p or pad_b or pad_r:
            x = ops.pad(x, (p, pad_r, p, pad_b))
        x = x[:, :, :hp, :wp].reshape(-1, c, hp // s, s, wp // s, s)
        cols = []
        for dy, dx in self.offsets:
            cols.append(x[:, :, dy // s:dy // s + ho, dy % s, dx // s:dx // s + wo, dx % s])
        return ops.cat(cols, axis=1)  # (B, k*k*Cin, Ho, Wo), channel = (dy*k + dx)*Cin + c

    def construct(self, x):
        use_im2col = self.impl == "im2col" and not (self.native_in_eval and not self.training)
        y = self._im2col(x) if use_im2col else self._native(x)
        if not self.has_bias:
            return y
        if self.bias_kernel is not None and y.dtype == ms.float32:
            return self.bias_kernel(y, self.bias)
        return y + self.bias.reshape(1, -1, 1, 1)

    def extend_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, s={self.stride}, "
                f"p={self.padding}, groups={self.groups}, bias={self.has_bias}, impl={self.impl}")


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same parameters and checkpoint names); in training on CPU the batch statistics,
    normalisation and gradient come from a compiled kernel (vig/models/kernels/vig_norm.cc), which is
    several times faster than MindSpore's CPU BatchNorm; the same kernel updates the running statistics
    as MindSpore's does (unbiased variance, `momentum` weighting the old value)."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.9):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.train_kernel = kernels.batch_norm_train()
        # nn.BatchNorm2d keeps 1 - momentum in self.momentum: the weight of the new batch
        self.kernel_hyper = ms.Tensor([eps, self.momentum], ms.float32)

    def construct(self, x):
        if self.training and self.train_kernel is not None and x.dtype == ms.float32:
            y, _, _, new_mean, new_var = self.train_kernel(x, self.gamma, self.beta, self.moving_mean,
                                                           self.moving_variance, self.kernel_hyper)
            y = ops.depend(y, ops.assign(self.moving_mean, ops.stop_gradient(new_mean)))
            return ops.depend(y, ops.assign(self.moving_variance, ops.stop_gradient(new_var)))
        return super().construct(x)


def batch_norm(channels: int) -> BatchNorm2d:
    """BatchNorm with PyTorch's defaults (eps 1e-5, running-stat momentum 0.1 == MindSpore 0.9)."""
    return BatchNorm2d(channels, eps=1e-5, momentum=0.9)


class GELU(nn.GELU):
    """Exact (erf) GELU, as in the original. On CPU a compiled kernel (vig/models/kernels, 15x faster than
    MindSpore's Erf, same values to ~1e-6); elsewhere, or for non-float32 inputs, the native op."""

    def __init__(self):
        super().__init__(approximate=False)
        self.kernel = kernels.gelu()

    def construct(self, x):
        if self.kernel is not None and x.dtype == ms.float32:
            return self.kernel(x)
        return ops.gelu(x, approximate="none")


def activation(name: str) -> nn.Cell:
    name = name.lower()
    if name == "gelu":
        return GELU()  # the original uses PyTorch's exact (erf) GELU
    if name == "relu":
        return nn.ReLU()
    if name == "leakyrelu":
        return nn.LeakyReLU(0.2)
    if name == "hswish":
        return nn.HSwish()
    raise ValueError(f"unknown activation {name!r}; expected one of gelu, relu, leakyrelu, hswish")


class Identity(nn.Cell):
    def construct(self, x):
        return x


class DropPath(nn.Cell):
    """Per-sample stochastic depth (timm semantics): drop the residual branch, rescale by 1/keep."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_path rate must be in [0, 1), got {drop_prob}")
        self.drop_prob = float(drop_prob)
        self.keep_prob = 1.0 - self.drop_prob

    def construct(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = ops.floor(self.keep_prob + ops.rand(shape, dtype=x.dtype))
        return x / self.keep_prob * mask

    def extend_repr(self):
        return f"drop_prob={self.drop_prob}"


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
            act: str | None = None, groups: int = 1) -> nn.SequentialCell:
    """Conv2d + BatchNorm (+ activation) as a SequentialCell indexed like the original's nn.Sequential."""
    layers = [Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups),
              batch_norm(out_channels)]
    if act:
        layers.append(activation(act))
    return nn.SequentialCell(layers)


def linspace(start: float, stop: float, num: int) -> list[float]:
    """torch.linspace in float32 (start half counted up, end half counted down), so the k and
    drop-path schedules match the original's exactly, including where int() truncates."""
    import numpy as np

    if num == 1:
        return [float(np.float32(start))]
    start32, stop32 = np.float32(start), np.float32(stop)
    step = np.float32((stop32 - start32) / np.float32(num - 1))
    half = num // 2
    return [float(start32 + step * np.float32(i)) if i < half else float(stop32 - step * np.float32(num - 1 - i))
            for i in range(num)]
