"""Dynamic graph construction (dilated kNN) and the graph convolutions of Vision GNN.

Semantics follow the original PyTorch code (huawei-noah/Efficient-AI-Backbones, vig_pytorch):
features are L2-normalised before the kNN (cosine ranking), the k*d nearest are taken and every d-th
kept (exactly k neighbours), max-relative features are interleaved with the node features before a
groups=4 1x1 convolution, and Pyramid ViG adds a frozen relative-position term to the distance.

Tensors are (B, C, N, 1) node maps; neighbour indices are (B, N, k) int32 into the key set.
"""
from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from .. import ops as vig_ops
from .layers import DropPath, Identity, conv_bn


# ----------------------------------------------------------------------------------------------
# kNN graph
# ----------------------------------------------------------------------------------------------
class DilatedKnnGraph(nn.Cell):
    """Neighbour indices of every node: the k*d nearest keys by cosine, then every d-th of them
    (vig.ops.dilated_knn).

    With `stochastic` (training only) a batch draws, with probability `epsilon`, k random neighbours
    out of the k*d nearest instead of the regular dilation.
    """

    def __init__(self, k: int = 9, dilation: int = 1, stochastic: bool = False, epsilon: float = 0.0):
        super().__init__()
        self.k, self.dilation = int(k), int(dilation)
        self.stochastic, self.epsilon = bool(stochastic), float(epsilon)
        self.knn = vig_ops.dilated_knn(self.k, self.dilation, self.stochastic, self.epsilon)

    def construct(self, x, y=None, relative_pos=None):
        """x: (B, C, N, 1) queries, y: (B, C, M, 1) keys (x itself when None) -> (B, N, k) int32."""
        return self.knn(x, y, relative_pos)


# ----------------------------------------------------------------------------------------------
# Graph convolutions
# ----------------------------------------------------------------------------------------------
def basic_conv(in_channels: int, out_channels: int, act: str = "gelu") -> nn.SequentialCell:
    """The original's BasicConv: 1x1 conv with groups=4 and bias, BatchNorm, activation."""
    return conv_bn(in_channels, out_channels, 1, 1, act, groups=4)


class MRConv(nn.Cell):
    """Max-relative graph conv: [x, max_j(x_j - x)] interleaved per channel, then BasicConv."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "gelu"):
        super().__init__()
        self.nn = basic_conv(in_channels * 2, out_channels, act)
        self.max_relative = vig_ops.max_relative()

    def construct(self, x, idx, y=None):
        return self.nn(self.max_relative(x, y, idx))


class EdgeConv(nn.Cell):
    """Edge conv: BasicConv on [x_i, x_j - x_i] per edge, max over neighbours."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "gelu"):
        super().__init__()
        self.nn = basic_conv(in_channels * 2, out_channels, act)
        self.gather_neighbours = vig_ops.gather_neighbours()

    def construct(self, x, idx, y=None):
        x_j = self.gather_neighbours(x if y is None else y, idx)
        x_i = ops.tile(x, (1, 1, 1, idx.shape[-1]))
        edges = self.nn(ops.cat([x_i, x_j - x_i], axis=1))
        return ops.max(edges, axis=-1, keepdims=True)[0]


class GraphSAGE(nn.Cell):
    """GraphSAGE: max over neighbours of BasicConv(x_j), then BasicConv on [x, that]."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "gelu"):
        super().__init__()
        self.nn1 = basic_conv(in_channels, in_channels, act)
        self.nn2 = basic_conv(in_channels * 2, out_channels, act)
        self.gather_neighbours = vig_ops.gather_neighbours()

    def construct(self, x, idx, y=None):
        x_j = self.gather_neighbours(x if y is None else y, idx)
        x_j = ops.max(self.nn1(x_j), axis=-1, keepdims=True)[0]
        return self.nn2(ops.cat([x, x_j], axis=1))


class GINConv(nn.Cell):
    """GIN: BasicConv((1 + eps) x + sum_j x_j), eps learnable from 0."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "gelu"):
        super().__init__()
        self.nn = basic_conv(in_channels, out_channels, act)
        self.eps = Parameter(Tensor(np.zeros((1,), np.float32)), name="eps")
        self.gather_neighbours = vig_ops.gather_neighbours()

    def construct(self, x, idx, y=None):
        x_j = self.gather_neighbours(x if y is None else y, idx)
        return self.nn((1 + self.eps) * x + x_j.sum(axis=-1, keepdims=True))


_GRAPH_CONV_CLASSES = {"mr": MRConv, "edge": EdgeConv, "sage": GraphSAGE, "gin": GINConv}
GRAPH_CONVS = tuple(_GRAPH_CONV_CLASSES)  # also the model schema's model_overrides.conv enum


def make_graph_conv(conv: str, in_channels: int, out_channels: int, act: str = "gelu") -> nn.Cell:
    if conv not in _GRAPH_CONV_CLASSES:
        raise ValueError(f"unknown graph conv {conv!r}; expected one of {', '.join(GRAPH_CONVS)}")
    return _GRAPH_CONV_CLASSES[conv](in_channels, out_channels, act)


class DyGraphConv(nn.Cell):
    """Dynamic graph conv on a (B, C, H, W) map: kNN over the H*W nodes (keys average-pooled by r)."""

    def __init__(self, in_channels: int, out_channels: int, k: int = 9, dilation: int = 1, conv: str = "mr",
                 act: str = "gelu", stochastic: bool = False, epsilon: float = 0.0, r: int = 1):
        super().__init__()
        self.r = int(r)
        self.knn = DilatedKnnGraph(k, dilation, stochastic, epsilon)
        self.gconv = make_graph_conv(conv, in_channels, out_channels, act)
        self.pool = nn.AvgPool2d(self.r, self.r) if self.r > 1 else None

    def neighbours(self, x, relative_pos=None):
        """The graph the forward pass builds on the (B, C, H, W) map `x`: (B, H*W, k) int32 key indices,
        the nodes (B, C, H*W, 1) and the keys ((B, C, H*W/r^2, 1) pooled, or None: the nodes themselves).
        vig/graph_view.py draws these very indices."""
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        y = None
        if self.r > 1:
            y = self.pool(x).reshape(-1, c, (h // self.r) * (w // self.r), 1)
        x = x.reshape(-1, c, h * w, 1)
        return self.knn(x, y, relative_pos), x, y

    def construct(self, x, relative_pos=None):
        h, w = x.shape[2], x.shape[3]
        idx, x, y = self.neighbours(x, relative_pos)
        out = self.gconv(x, idx, y)
        return out.reshape(-1, out.shape[1], h, w)


# ----------------------------------------------------------------------------------------------
# Relative position (Pyramid ViG)
# ----------------------------------------------------------------------------------------------
def sincos_pos_embed_2d(dim: int, grid: int) -> np.ndarray:
    """MAE-style 2-D sin-cos embedding, (grid*grid, dim): half the dims encode rows, half columns."""
    if dim % 4:
        raise ValueError(f"relative position needs channels divisible by 4, got {dim}")
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))

    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # the original passes the meshgrid (w first) and encodes grid[0] (=w) with the first half
    return np.concatenate([one_axis(dim // 2, gw), one_axis(dim // 2, gh)], axis=1)


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """PyTorch's bicubic convolution weights for the 4 taps at offsets -1, 0, 1, 2."""
    def near(s):
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s):
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _resize_axis_bicubic(arr: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """1-D pass of F.interpolate(mode='bicubic', align_corners=False) (no antialias), clamped borders."""
    in_size = arr.shape[axis]
    if in_size == out_size:
        return arr
    scale = in_size / out_size
    src = (np.arange(out_size) + 0.5) * scale - 0.5
    base = np.floor(src).astype(np.int64)
    w = _cubic_weights(src - base)  # (out, 4)
    taps = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)  # (out, 4)
    moved = np.moveaxis(arr, axis, -1)
    out = (moved[..., taps] * w).sum(-1)
    return np.moveaxis(out, -1, axis)


def relative_position_bias(channels: int, n: int, r: int) -> np.ndarray:
    """The original's frozen relative-position term, (1, n, n / r^2) float32, negated so close nodes
    get a smaller distance."""
    grid = int(round(n ** 0.5))
    if grid * grid != n:
        raise ValueError(f"relative position needs a square node grid, got {n} nodes")
    emb = sincos_pos_embed_2d(channels, grid)
    rel = (2.0 * emb @ emb.T / emb.shape[1]).astype(np.float32)
    rel = _resize_axis_bicubic(rel.astype(np.float64), n, 0)
    rel = _resize_axis_bicubic(rel, n // (r * r), 1)
    return (-rel[None]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Grapher
# ----------------------------------------------------------------------------------------------
class Grapher(nn.Cell):
    """fc1 -> dynamic graph conv (C -> 2C) -> fc2, with a DropPath residual."""

    def __init__(self, channels: int, k: int = 9, dilation: int = 1, conv: str = "mr", act: str = "gelu",
                 stochastic: bool = False, epsilon: float = 0.0, r: int = 1, n: int = 196,
                 drop_path: float = 0.0, relative_pos: bool = False):
        super().__init__()
        self.fc1 = conv_bn(channels, channels)
        self.graph_conv = DyGraphConv(channels, channels * 2, k, dilation, conv, act, stochastic, epsilon, r)
        self.fc2 = conv_bn(channels * 2, channels)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else Identity()
        self.relative_pos = None
        if relative_pos:
            self.relative_pos = Parameter(Tensor(relative_position_bias(channels, n, r)),
                                          name="relative_pos", requires_grad=False)

    def construct(self, x):
        shortcut = x
        x = self.fc1(x)
        x = self.graph_conv(x, self.relative_pos)
        x = self.fc2(x)
        return self.drop_path(x) + shortcut
