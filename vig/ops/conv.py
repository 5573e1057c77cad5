"""Convolutions as products: the ops chosen separately (vig.ops.conv2d).

On CPU MindSpore's convolution operator is oneDNN's reference kernel for every convolution but an
ungrouped 1x1 one; these compute the others through that fast 1x1 product."""
from __future__ import annotations

from mindspore import nn, ops


class Im2ColConv(nn.Cell):
    """(x, w (Cout, Cin, k, k)) -> conv(x, w): cols (B, k*k*Cin, Ho, Wo) times w as (Cout, k*k*Cin, 1, 1)."""

    def __init__(self, im2col: nn.Cell, product: nn.Cell):
        super().__init__()
        self.im2col, self.product = im2col, product

    def construct(self, x, weight):
        cols = self.im2col(x)
        # the cols' channel order is (dy*k + dx)*Cin + c: the weight's taps outermost
        w = weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1, 1, 1)
        return self.product(cols, w)


class PerGroupConv(nn.Cell):
    """(x (B, Cin, H, W), w (Cout, Cin/groups, 1, 1)) -> the grouped 1x1 convolution: `product` (an
    ungrouped 1x1 convolution) on each group's channels and weights, concatenated."""

    def __init__(self, product: nn.Cell, groups: int):
        super().__init__()
        self.product, self.groups = product, groups

    def construct(self, x, weight):
        xs = ops.split(x, x.shape[1] // self.groups, axis=1)
        ws = ops.split(weight, weight.shape[0] // self.groups, axis=0)
        return ops.cat([self.product(xg, wg) for xg, wg in zip(xs, ws)], axis=1)
