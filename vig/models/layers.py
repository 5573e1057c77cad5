"""Small building blocks shared by the ViG family: convolution, norm, activation, DropPath.

Layers own the parameters; the ops they compute come from vig.ops, which picks a compiled CPU kernel or
MindSpore's native op when the layer is built (`mint` kernels are missing on CPU, so none are used).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import HeNormal, Zero, initializer

from .. import ops as vig_ops


class Conv2d(nn.Cell):
    """2-D convolution with PyTorch's parameter layout and initialisation.

    The weight is always (Cout, Cin/groups, kH, kW) and the bias (Cout,), so checkpoints are the same
    whichever implementation runs. `impl` picks the algorithm (vig.ops.conv2d): "im2col", "direct" (the
    convolution operator) or "auto" (im2col for ungrouped k x k convolutions on CPU).
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
        self.impl = impl
        self.conv = vig_ops.conv2d(kernel_size, stride, padding, groups, impl)
        self.bias_add = vig_ops.bias_add() if bias else None

    def construct(self, x):
        y = self.conv(x, self.weight)
        return self.bias_add(y, self.bias) if self.has_bias else y

    def extend_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, s={self.stride}, "
                f"p={self.padding}, groups={self.groups}, bias={self.has_bias}, impl={self.impl}")


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same parameters and checkpoint names, and amp keeps it float32), computed by
    vig.ops.batch_norm: on CPU in training a compiled kernel several times faster than MindSpore's."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.9):
        super().__init__(channels, eps=eps, momentum=momentum)
        # nn.BatchNorm2d keeps 1 - momentum in self.momentum: the weight of the new batch
        self.norm = vig_ops.batch_norm(eps, self.momentum)

    def construct(self, x):
        return self.norm(x, self.gamma, self.beta, self.moving_mean, self.moving_variance)


def batch_norm(channels: int) -> BatchNorm2d:
    """BatchNorm with PyTorch's defaults (eps 1e-5, running-stat momentum 0.1 == MindSpore 0.9)."""
    return BatchNorm2d(channels, eps=1e-5, momentum=0.9)


class GELU(nn.Cell):
    """Exact (erf) GELU, as in the original (vig.ops.gelu)."""

    def __init__(self):
        super().__init__()
        self.gelu = vig_ops.gelu()

    def construct(self, x):
        return self.gelu(x)


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
