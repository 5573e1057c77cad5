"""Every op in MindSpore's own operators: what GPU, Ascend and the exported MINDIR run, and the reference
the compiled kernels (kernels.py) are tested against.

Cells hold no parameters (the layers in vig/models own them), so the implementation chosen never
changes a checkpoint. Node maps are (B, C, N, 1); neighbour indices (B, N, k) int32 into the keys.
"""
from __future__ import annotations

import functools

import mindspore as ms
import numpy as np
from mindspore import nn, ops

IMPLEMENTATION = "native"


class NativeOp(nn.Cell):
    implementation = IMPLEMENTATION

    @classmethod
    def usable(cls, *args, **kwargs) -> bool:
        return True


def cast_like(weight, x):
    # amp O2/O3 in GRAPH_MODE casts a cell's input to float16 but leaves the weight float32 here
    # (MindSpore 2.10), and Conv2D rejects mixed input types
    return weight if weight.dtype == x.dtype else weight.astype(x.dtype)


class Gelu(NativeOp):
    """Exact (erf) GELU, x * Phi(x)."""

    def construct(self, x):
        return ops.gelu(x, approximate="none")


class Conv(NativeOp):
    """(x, w (Cout, Cin/groups, k, k)) -> the convolution without bias, zero padding on every side."""

    def __init__(self, kernel_size: int, stride: int, padding: int, groups: int):
        super().__init__()
        self.stride, self.padding, self.groups = stride, padding, groups

    def construct(self, x, weight):
        return ops.conv2d(x, cast_like(weight, x), None, self.stride, "pad", self.padding, 1, self.groups)


class PointwiseConv(NativeOp):
    """(x (B, Cin, H, W), w (Cout, Cin/groups, 1, 1)) -> the 1x1 convolution without bias."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def construct(self, x, weight):
        return ops.conv2d(x, cast_like(weight, x), None, 1, "valid", 0, 1, self.groups)


@functools.lru_cache(maxsize=None)
def im2col_index(k: int, s: int, p: int, h: int, w: int) -> np.ndarray:
    """(k*k*Ho*Wo,) int32: for each tap (dy, dx) and output (i, j) the flat position (i*s + dy - p) * w +
    (j*s + dx - p) of its input pixel, or h*w (a zero appended after the map) where that is padding."""
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    rows = (np.arange(ho) * s)[None, None, :, None] + np.arange(k)[:, None, None, None] - p
    cols = (np.arange(wo) * s)[None, None, None, :] + np.arange(k)[None, :, None, None] - p
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return np.where(inside, rows * w + cols, h * w).astype(np.int32).reshape(-1)


class Im2Col(NativeOp):
    """x (B, C, H, W) -> cols (B, k*k*C, Ho, Wo), channel (dy*k + dx)*C + c, as one Gather.

    Each tap's pixels are gathered from the flattened map (padding: a zero appended to it) at a constant
    index (im2col_index, run by the graph compiler as the shapes are static), then the taps moved before
    the channels. On CPU 4-8x faster than pad + one slice per tap + concat (docs/performance.md), the
    same values, and no strided slice (MindSpore 2.10's CPU StridedSliceGrad fails for step > 1).
    (`ops.unfold`, MindSpore's Im2Col, would be faster still, but the Ascend 310 has no such operator.)"""

    def __init__(self, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def construct(self, x):
        k, s, p = self.kernel_size, self.stride, self.padding
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        flat = x.reshape(-1, c, h * w)
        if p:
            flat = ops.cat([flat, ops.zeros_like(flat[:, :, :1])], axis=2)
        cols = ops.gather(flat, ms.Tensor(im2col_index(k, s, p, h, w)), 2)
        return cols.reshape(-1, c, k * k, ho * wo).transpose(0, 2, 1, 3).reshape(-1, k * k * c, ho, wo)


class BiasAdd(NativeOp):
    """(x (B, C, ...), bias (C)) -> x + bias per channel."""

    def construct(self, x, bias):
        return x + bias.reshape(1, -1, 1, 1)


class BatchNorm(NativeOp):
    """(x (B, C, H, W), gamma, beta, moving_mean, moving_var) -> y, as nn.BatchNorm2d: batch statistics
    in training (updating the running ones in place, `momentum` weighting the batch), running ones in eval."""

    def __init__(self, eps: float, momentum: float):
        super().__init__()
        self.bn_train = ops.BatchNorm(is_training=True, epsilon=eps, momentum=momentum)
        self.bn_infer = ops.BatchNorm(is_training=False, epsilon=eps)

    def construct(self, x, gamma, beta, moving_mean, moving_var):
        if self.training:
            return self.bn_train(x, gamma, beta, moving_mean, moving_var)[0]
        return self.bn_infer(x, gamma, beta, moving_mean, moving_var)[0]


# ----------------------------------------------------------------------------------------------
# kNN graph and max-relative features
# ----------------------------------------------------------------------------------------------
def l2_normalize(x, axis: int = 1, eps: float = 1e-12):
    """F.normalize(p=2): x / max(||x||, eps)."""
    norm = ops.sqrt((x * x).sum(axis=axis, keepdims=True))
    return x / ops.maximum(norm, eps)


def pairwise_distance(x, y, y_cols=None, y_sq=None):
    """Squared Euclidean distance ||x||^2 - 2 x.y + ||y||^2 between rows; x (B, N, C), y (B, M, C).

    `y_cols` (y as (B, C, M)) and `y_sq` ((B, 1, M)), when the caller has them, save the Transposes that
    would rebuild them; the values are the same bits either way."""
    inner = ops.matmul(x, y.transpose(0, 2, 1) if y_cols is None else y_cols)
    x_sq = (x * x).sum(axis=-1, keepdims=True)
    if y_sq is None:
        y_sq = (y * y).sum(axis=-1, keepdims=True).transpose(0, 2, 1)
    return x_sq - 2.0 * inner + y_sq


class DilatedKnn(NativeOp):
    """(x (B, C, N, 1) queries, y (B, C, M, 1) keys or None (= x), rel (1, N, M) or None) -> (B, N, k)
    int32: the k*d nearest keys by cosine (L2-normalised squared distance, plus rel), every d-th.

    With `stochastic` (training only) a batch draws, with probability `epsilon`, k random neighbours
    out of the k*d nearest instead of the regular dilation."""

    def __init__(self, k: int, dilation: int, stochastic: bool = False, epsilon: float = 0.0):
        super().__init__()
        self.k, self.dilation = k, dilation
        self.random_dilation, self.epsilon = stochastic and dilation > 1, epsilon

    def construct(self, x, y=None, relative_pos=None):
        x = ops.stop_gradient(x)
        xn = l2_normalize(x.squeeze(-1), axis=1)  # (B, C, N)
        xq = xn.transpose(0, 2, 1)  # (B, N, C)
        if y is None:  # the keys are the queries: reuse their (B, C, N) layout and squared norms
            dist = pairwise_distance(xq, xq, xn, (xq * xq).sum(axis=-1, keepdims=True).transpose(0, 2, 1))
        else:
            yn = l2_normalize(ops.stop_gradient(y).squeeze(-1), axis=1)
            dist = pairwise_distance(xq, yn.transpose(0, 2, 1), yn)
        if relative_pos is not None:
            dist = dist + relative_pos
        _, idx = ops.topk(-dist, self.k * self.dilation)
        idx = ops.stop_gradient(idx.astype(ms.int32))
        dilated = idx[:, :, ::self.dilation]
        if self.random_dilation and self.training:
            pick = ops.sort(ops.rand((self.k * self.dilation,)))[1][:self.k]
            random_k = ops.gather(idx, pick.astype(ms.int32), 2)
            use_random = ops.rand((1,)) < self.epsilon
            dilated = ops.select(use_random.reshape(1, 1, 1), random_k, dilated)
        return dilated


def gather_neighbours(x, idx):
    """x: (B, C, M, 1) key features, idx: (B, N, k) -> (B, C, N, k) neighbour features.

    Reshapes use -1 for the batch: the exported graph keeps a dynamic batch dimension."""
    n, k, c = idx.shape[1], idx.shape[2], x.shape[1]
    feats = x.squeeze(-1).transpose(0, 2, 1)  # (B, M, C)
    out = ops.gather(feats, idx.reshape(-1, n * k), 1, batch_dims=1)  # (B, N*k, C)
    return out.reshape(-1, n, k, c).transpose(0, 3, 1, 2)


class GatherNeighbours(NativeOp):
    """(x (B, C, M, 1), idx (B, N, k)) -> (B, C, N, k): gather_neighbours as an op cell."""

    def construct(self, x, idx):
        return gather_neighbours(x, idx)


def max_of_neighbours(x, idx):
    """max over j of gather_neighbours(x, idx)[..., j] -> (B, C, N, 1), exactly, for inference.

    One (B, N) gather per neighbour folded with Maximum: ~3x faster on CPU than gathering (B, N*k, C),
    transposing and ArgMaxWithValue (whose argmax the training path keeps for its gradient)."""
    feats = x.squeeze(-1).transpose(0, 2, 1)  # (B, M, C)
    out = ops.gather(feats, idx[:, :, 0], 1, batch_dims=1)  # (B, N, C)
    for j in range(1, idx.shape[2]):
        out = ops.maximum(out, ops.gather(feats, idx[:, :, j], 1, batch_dims=1))
    return out.transpose(0, 2, 1).expand_dims(-1)


class MaxRelative(NativeOp):
    """(x (B, C, N, 1), y (B, C, M, 1) keys or None (= x), idx (B, N, k)) -> (B, 2C, N, 1): MRConv's features, channel
    2c = x[c] and 2c+1 = max_j y[c, idx[n, j]] - x[c] (the original's interleaved cat of x and
    max_j(x_j - x_i); subtraction is monotonic, so the max can come first, one subtract less)."""

    def construct(self, x, y, idx):
        y = x if y is None else y
        if self.training:
            rel = ops.max(gather_neighbours(y, idx), axis=-1, keepdims=True)[0] - x
        else:  # e.g. the exported MINDIR
            rel = max_of_neighbours(y, idx) - x
        c, n = x.shape[1], x.shape[2]
        return ops.cat([x.expand_dims(2), rel.expand_dims(2)], axis=2).reshape(-1, 2 * c, n, 1)


# ----------------------------------------------------------------------------------------------
# The train step's per-gradient passes
# ----------------------------------------------------------------------------------------------
class SquareSum(NativeOp):
    """g (any shape) -> () float32 sum of squares."""

    def construct(self, grad):
        grad = grad.astype(ms.float32)
        return ops.reduce_sum(grad * grad)


class Scale(NativeOp):
    """(g (any shape), factor ()) -> g * factor."""

    def construct(self, grad, factor):
        return grad * factor.astype(grad.dtype)
