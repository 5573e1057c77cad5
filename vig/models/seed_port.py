"""The model-zoo port's graph (mindspore-ai/models, research/cv/ViG): what its checkpoints compute.

Select it with `model_overrides: {graph: seed_port}` on an isotropic variant (never the default). It
differs from the original's graph (vig/models/graph.py) in exactly the ways the port does:

- kNN on the raw features (no L2 normalisation), squared-L2 distance summed as the port sums it
  (||x_i||^2 + (-2 x_i.x_j) + ||x_j||^2);
- the k nearest (not k*d), then every d-th of them: ceil(k/d) neighbours per node;
- max-relative features concatenated as blocks [x, max_j(x_j - x)] (not interleaved) before the
  groups=4 1x1 convolution, so its groups 0-1 see only x and 2-3 only the relative features;
- MindSpore's default GELU (tanh approximation) everywhere;
- no bias in the stem, fc1/fc2 and FFN convolutions; no head dropout;
- k_i and drop-path rates from numpy's float64 linspace, dilation min(i // 4 + 1, nodes // max k_i);
- the port's initialisation: conv weights N(0, 2 / (kh kw Cout)), pos_embed truncated normal (0.02).

Cells carry the port's names (`patch_embed.convN`, `pos_embed`, `blocks.i.grapher...`,
`blocks.i.mlp...`, `head.N`), so a port checkpoint loads after dropping its `model.` prefix and its
optimizer state (vig/weights.py). Native MindSpore ops throughout, like the port: the outputs match
the port's own code on CPU (tests/test_seed_port.py, reference data from
tests/reference/seed_port.py).

Generalised beyond the port only where it has no value: image sizes other than 224 (stem_stride
sets the number of stride-2 stem convs, the node grid follows), and the channels/blocks/k/classes
overrides used by small test models; at 224 with stem_stride 16 it is the port.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, TruncatedNormal, initializer
import mindspore as ms

from .layers import DropPath, Identity
from .registry import register_graph

GRAPH_NAME = "seed_port"
POS_EMBED_SIGMA = 0.02  # truncated at +-2 sigma (scipy truncnorm(-2, 2) in the port)


def port_conv(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
              bias: bool = False) -> nn.Conv2d:
    """nn.Conv2d as the port builds it (3x3: pad_mode 'pad' 1; 1x1: the default), with its init."""
    pad = {"pad_mode": "pad", "padding": kernel_size // 2} if kernel_size > 1 else {}
    sigma = math.sqrt(2.0 / (kernel_size * kernel_size * out_channels))  # fan_out, as ViG.init_weights
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, group=groups, has_bias=bias,
                     weight_init=Normal(sigma), bias_init="zeros", **pad)


def port_gelu() -> nn.GELU:
    """The port's nn.GELU(): MindSpore's default, the tanh approximation (pinned: its weights were trained so)."""
    return nn.GELU(approximate=True)


def port_conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 act: bool = False) -> nn.SequentialCell:
    layers = [port_conv(in_channels, out_channels, kernel_size, stride), nn.BatchNorm2d(out_channels)]
    if act:
        layers.append(port_gelu())
    return nn.SequentialCell(layers)


def port_knn(x, k: int, dilation: int):
    """x (B, C, N, 1) -> (B, N, ceil(k / dilation)) int32: the port's dense_knn_matrix + dilation slice."""
    x = ops.stop_gradient(x).squeeze(-1).transpose(0, 2, 1)  # (B, N, C)
    inner = -2 * ops.matmul(x, x.transpose(0, 2, 1))
    square = ops.ReduceSum(True)(ops.mul(x, x), -1)
    dist = square + inner + square.transpose(0, 2, 1)  # the port's order of additions
    _, idx = ops.TopK()(-dist, k)
    return ops.stop_gradient(idx.astype(ms.int32)[:, :, ::dilation])


class MRGraphConv2d(nn.Cell):
    """The port's max-relative graph conv: [x, max_j(x_j - x)] as blocks, then a groups=4 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, k: int = 9, dilation: int = 1):
        super().__init__()
        self.k, self.dilation = int(k), int(dilation)
        self.nn = port_conv(in_channels * 2, out_channels, groups=4, bias=True)

    @property
    def neighbours(self) -> int:
        return -(-self.k // self.dilation)

    def construct(self, x):
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        nodes = x.reshape(-1, c, h * w, 1)
        idx = port_knn(nodes, self.k, self.dilation)
        feats = nodes.squeeze(-1).transpose(0, 2, 1)  # (B, N, C)
        n, m = idx.shape[1], idx.shape[2]
        gathered = ops.gather(feats, idx.reshape(-1, n * m), 1, batch_dims=1).reshape(-1, n, m, c)
        # max_j(x_j - x) == max_j(x_j) - x bit for bit (rounding is monotonic), one subtraction per node
        relative = (ops.ReduceMax()(gathered, 2) - feats).transpose(0, 2, 1).expand_dims(-1)
        out = self.nn(ops.cat([nodes, relative], axis=1))
        return out.reshape(-1, out.shape[1], h, w)


class Grapher(nn.Cell):
    def __init__(self, dim: int, k: int, dilation: int, drop_path: float):
        super().__init__()
        self.fc1 = port_conv_bn(dim, dim)
        self.graph_conv = nn.SequentialCell([MRGraphConv2d(dim, 2 * dim, k, dilation), nn.BatchNorm2d(2 * dim),
                                             port_gelu()])
        self.fc2 = port_conv_bn(2 * dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else Identity()

    def construct(self, x):
        return x + self.drop_path(self.fc2(self.graph_conv(self.fc1(x))))


class Mlp(nn.Cell):
    def __init__(self, dim: int, hidden: int, drop_path: float):
        super().__init__()
        self.fc1 = port_conv_bn(dim, hidden, act=True)
        self.fc2 = port_conv_bn(hidden, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else Identity()

    def construct(self, x):
        return x + self.drop_path(self.fc2(self.fc1(x)))


class Block(nn.Cell):
    def __init__(self, dim: int, mlp_ratio: float, k: int, dilation: int, drop_path: float):
        super().__init__()
        self.grapher = Grapher(dim, k, dilation, drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop_path)

    def construct(self, x):
        return self.mlp(self.grapher(x))


class PatchEmbed(nn.SequentialCell):
    """conv1..conv{n+1}: n stride-2 3x3 conv+BN+GELU (widths dim/2^(n-1) .. dim), then a stride-1 conv+BN.
    The port's n is 4 (conv1..conv5, widths dim/8, dim/4, dim/2, dim, dim)."""

    def __init__(self, dim: int, n_down: int = 4):
        convs, prev = [], 3
        for i in range(n_down):
            width = dim // 2 ** (n_down - 1 - i)
            convs.append(port_conv_bn(prev, width, 3, 2, act=True))
            prev = width
        convs.append(port_conv_bn(prev, dim, 3, 1))
        super().__init__(OrderedDict((f"conv{i + 1}", conv) for i, conv in enumerate(convs)))


def check_port_config(cfg) -> None:
    """Refuse ViGConfig fields the port has no counterpart for, naming the field."""
    if cfg.pyramid or len(cfg.blocks) != 1 or any(r != 1 for r in cfg.reduce_ratios):
        raise ValueError(f"graph {GRAPH_NAME!r} (the model-zoo port) has no pyramid variants; it is isotropic "
                         f"(one stage), got blocks={cfg.blocks}, reduce_ratios={cfg.reduce_ratios}")
    unsupported = {"conv": (cfg.conv, "mr"), "act": (cfg.act, "gelu"),
                   "k_growth": (cfg.k_growth, True), "use_dilation": (cfg.use_dilation, True),
                   "stochastic": (cfg.stochastic, False), "relative_pos": (cfg.relative_pos, False),
                   "drop_rate": (cfg.drop_rate, 0.0), "head_dim": (cfg.head_dim, 1024)}
    for key, (value, port_value) in unsupported.items():
        if value != port_value:
            raise ValueError(f"graph {GRAPH_NAME!r} (the model-zoo port) only has {key}={port_value!r}, "
                             f"got {key}={value!r}; use the default graph for other values")
    first_width = cfg.stem_stride // 2  # the stem's first conv has channels / (stem_stride / 2) outputs
    if cfg.channels[0] % first_width:
        raise ValueError(f"graph {GRAPH_NAME!r}: channels {cfg.channels[0]} must be a multiple of "
                         f"{first_width} (stem_stride {cfg.stem_stride} halves it down to the first stem conv)")


class SeedPortViG(nn.Cell):
    """The port's ViG (its class `ViG`): patch_embed + pos_embed, blocks, mean-pool, head."""

    def __init__(self, cfg):
        super().__init__()
        cfg.validate()
        check_port_config(cfg)
        self.cfg = cfg
        dim, depth, grid = cfg.channels[0], cfg.blocks[0], cfg.grid
        self.patch_embed = PatchEmbed(dim, int(np.log2(cfg.stem_stride)))
        self.pos_embed = Parameter(initializer(TruncatedNormal(POS_EMBED_SIGMA, 0.0, -2 * POS_EMBED_SIGMA,
                                                               2 * POS_EMBED_SIGMA), (1, dim, grid, grid),
                                               ms.float32), name="pos_embed")
        dpr = [float(v) for v in np.linspace(0, cfg.drop_path_rate, depth)]
        num_knn = [int(v) for v in np.linspace(cfg.k, 2 * cfg.k, depth)]
        max_dilation = grid * grid // max(num_knn)  # the port's 196 // max k at 224
        if max_dilation < 1:
            raise ValueError(f"graph {GRAPH_NAME!r}: k up to {max(num_knn)} needs more than the {grid * grid} "
                             f"nodes of a {grid}x{grid} grid; lower k or raise image_size")
        self.blocks = nn.CellList([Block(dim, cfg.mlp_ratio, num_knn[i], min(max_dilation, i // 4 + 1), dpr[i])
                                   for i in range(depth)])
        self.head = nn.SequentialCell([port_conv(dim, cfg.head_dim, bias=True), nn.BatchNorm2d(cfg.head_dim),
                                       port_gelu(), port_conv(cfg.head_dim, cfg.num_classes, bias=True)])

    def forward_features(self, x):
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x

    def forward_head(self, x):
        x = ops.ReduceMean(True)(x, (2, 3))
        return self.head(x).squeeze(-1).squeeze(-1)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))

    def graph_schedule(self) -> list[dict]:
        """Per-block k, dilation and the neighbours actually used (ceil(k / dilation))."""
        return [{"k": b.grapher.graph_conv[0].k, "dilation": b.grapher.graph_conv[0].dilation,
                 "neighbours": b.grapher.graph_conv[0].neighbours, "r": 1} for b in self.blocks]


register_graph(GRAPH_NAME, SeedPortViG)
