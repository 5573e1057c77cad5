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
import mindspore as ms

from . import kernels
from .layers import Conv2d, DropPath, Identity, activation, batch_norm, conv_bn

GRAPH_CONVS = ("mr", "edge", "sage", "gin")


# ----------------------------------------------------------------------------------------------
# kNN graph
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


class DilatedKnnGraph(nn.Cell):
    """Neighbour indices of every node: the k*d nearest keys, then every d-th of them.

    With `stochastic` (training only) a batch draws, with probability `epsilon`, k random neighbours
    out of the k*d nearest instead of the regular dilation.
    """

    def __init__(self, k: int = 9, dilation: int = 1, stochastic: bool = False, epsilon: float = 0.0):
        super().__init__()
        self.k, self.dilation = int(k), int(dilation)
        self.stochastic, self.epsilon = bool(stochastic), float(epsilon)
        # Fused normalise + distance + top-k + dilation on CPU (vig/models/kernels); the stochastic
        # variant needs all k*d candidates, so it keeps the native ops.
        self.kernel = kernels.dilated_knn(self.k, False) if not self.stochastic else None
        self.kernel_rel = kernels.dilated_knn(self.k, True) if not self.stochastic else None
        self.geometry = kernels.geometry(self.k, self.dilation)

    def construct(self, x, y=None, relative_pos=None):
        """x: (B, C, N, 1) queries, y: (B, C, M, 1) keys (x itself when None) -> (B, N, k) int32."""
        x = ops.stop_gradient(x)
        if self.kernel is not None and x.dtype == ms.float32:
            keys = x if y is None else ops.stop_gradient(y)
            if relative_pos is None:
                return ops.stop_gradient(self.kernel(x, keys, self.geometry))
            return ops.stop_gradient(self.kernel_rel(x, keys, relative_pos, self.geometry))
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
        if self.stochastic and self.training and self.dilation > 1:
            pick = ops.sort(ops.rand((self.k * self.dilation,)))[1][:self.k]
            random_k = ops.gather(idx, pick.astype(ms.int32), 2)
            use_random = ops.rand((1,)) < self.epsilon
            dilated = ops.select(use_random.reshape(1, 1, 1), random_k, dilated)
        return dilated


def max_of_neighbours(x, idx):
    """max over j of gather_neighbours(x, idx)[..., j] -> (B, C, N, 1), exactly, for inference.

    One (B, N) gather per neighbour folded with Maximum: ~3x faster on CPU than gathering (B, N*k, C),
    transposing and ArgMaxWithValue (whose argmax the training path keeps for its gradient)."""
    feats = x.squeeze(-1).transpose(0, 2, 1)  # (B, M, C)
    out = ops.gather(feats, idx[:, :, 0], 1, batch_dims=1)  # (B, N, C)
    for j in range(1, idx.shape[2]):
        out = ops.maximum(out, ops.gather(feats, idx[:, :, j], 1, batch_dims=1))
    return out.transpose(0, 2, 1).expand_dims(-1)


def gather_neighbours(x, idx):
    """x: (B, C, M, 1) key features, idx: (B, N, k) -> (B, C, N, k) neighbour features.

    Reshapes use -1 for the batch: the exported graph keeps a dynamic batch dimension."""
    n, k, c = idx.shape[1], idx.shape[2], x.shape[1]
    feats = x.squeeze(-1).transpose(0, 2, 1)  # (B, M, C)
    out = ops.gather(feats, idx.reshape(-1, n * k), 1, batch_dims=1)  # (B, N*k, C)
    return out.reshape(-1, n, k, c).transpose(0, 3, 1, 2)


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
        self.max_relative = kernels.max_relative()  # fused gather + max + interleave on CPU, None elsewhere

    def construct(self, x, idx, y=None):
        keys = x if y is None else y
        if self.max_relative is not None and keys.dtype == ms.float32:
            return self.nn(self.max_relative(x, keys, idx)[0])
        # max_j(x_j - x_i) == max_j(x_j) - x_i exactly (subtraction is monotonic), one subtract less.
        if self.training:
            rel = ops.max(gather_neighbours(keys, idx), axis=-1, keepdims=True)[0] - x
        else:  # e.g. the exported MINDIR
            rel = max_of_neighbours(keys, idx) - x
        c, n = x.shape[1], x.shape[2]
        inter = ops.cat([x.expand_dims(2), rel.expand_dims(2)], axis=2).reshape(-1, 2 * c, n, 1)
        return self.nn(inter)


class EdgeConv(nn.Cell):
    """Edge conv: BasicConv on [x_i, x_j - x_i] per edge, max over neighbours."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "gelu"):
        super().__init__()
        self.nn = basic_conv(in_channels * 2, out_channels, act)

    def construct(self, x, idx, y=None):
        x_j = gather_neighbours(x if y is None else y, idx)
        x_i = ops.tile(x, (1, 1, 1, idx.shape[-1]))
        edges = self.nn(ops.cat([x_i, x_j - x_i], axis=1))
        return ops.max(edges, axis=-1, keepdims=True)[0]


class GraphSAGE(nn.Cell):
    """GraphSAGE: max over neighbours of BasicConv(x_j), then BasicConv on [x, that]."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "gelu"):
        super().__init__()
        self.nn1 = basic_conv(in_channels, in_channels, act)
        self.nn2 = basic_conv(in_channels * 2, out_channels, act)

    def construct(self, x, idx, y=None):
        x_j = gather_neighbours(x if y is None else y, idx)
        x_j = ops.max(self.nn1(x_j), axis=-1, keepdims=True)[0]
        return self.nn2(ops.cat([x, x_j], axis=1))


class GINConv(nn.Cell):
    """GIN: BasicConv((1 + eps) x + sum_j x_j), eps learnable from 0."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "gelu"):
        super().__init__()
        self.nn = basic_conv(in_channels, out_channels, act)
        self.eps = Parameter(Tensor(np.zeros((1,), np.float32)), name="eps")

    def construct(self, x, idx, y=None):
        x_j = gather_neighbours(x if y is None else y, idx)
        return self.nn((1 + self.eps) * x + x_j.sum(axis=-1, keepdims=True))


_GRAPH_CONV_CLASSES = {"mr": MRConv, "edge": EdgeConv, "sage": GraphSAGE, "gin": GINConv}


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
