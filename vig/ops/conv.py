"""A k x k convolution as im2col + one 1x1 product: the two ops chosen separately (vig.ops.conv2d)."""
from __future__ import annotations

from mindspore import nn


class Im2ColConv(nn.Cell):
    """(x, w (Cout, Cin, k, k)) -> conv(x, w): cols (B, k*k*Cin, Ho, Wo) times w as (Cout, k*k*Cin, 1, 1).

    `direct` (a convolution operator cell), when given, computes the convolution in eval mode instead."""

    def __init__(self, im2col: nn.Cell, product: nn.Cell, direct: nn.Cell | None = None):
        super().__init__()
        self.im2col, self.product = im2col, product
        self.direct_in_eval = direct is not None
        self.direct = direct

    def construct(self, x, weight):
        if self.direct_in_eval and not self.training:
            return self.direct(x, weight)
        cols = self.im2col(x)
        # the cols' channel order is (dy*k + dx)*Cin + c: the weight's taps outermost
        w = weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1, 1, 1)
        return self.product(cols, w)
