"""Vision GNN (Han et al., NeurIPS 2022): isotropic ViG and Pyramid ViG.

Cell and parameter names mirror the original PyTorch modules (`stem.convs.N`, `pos_embed`,
`backbone.N`, `prediction.N`), so a released checkpoint maps onto this model by renaming only the
BatchNorm statistics (see vig/convert.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from .graph import GRAPH_CONVS, Grapher
from .layers import Conv2d, DropPath, Identity, activation, batch_norm, conv_bn, linspace
from ..variants import SEED_ALIASES, VARIANTS
from .registry import graph_builder, register_graph, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ViGConfig:
    """Everything that shapes a ViG; the named variants below differ only in these fields."""

    channels: tuple = (192,)         # one entry (isotropic) or one per stage (pyramid)
    blocks: tuple = (12,)            # blocks per stage
    k: int = 9                       # neighbours of the first block
    k_growth: bool = True            # k grows linearly to 2k over the depth (isotropic); constant in pyramid
    conv: str = "mr"                 # graph conv: mr, edge, sage, gin
    act: str = "gelu"
    image_size: int = 224
    stem_stride: int = 16            # isotropic: 2**(number of stride-2 stem convs); pyramid: 4
    reduce_ratios: tuple = (1,)      # pyramid: keys average-pooled by r per stage
    relative_pos: bool = False
    use_dilation: bool = True
    stochastic: bool = False         # stochastic dilation (training only)
    epsilon: float = 0.2
    mlp_ratio: int = 4
    head_dim: int = 1024
    num_classes: int = 1000
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    pyramid: bool = False
    graph: str = "original"          # which network: "original" (vig_pytorch) or "seed_port" (the model zoo's port)
    # eval preprocessing the published weights expect (timm default_cfg of the original)
    crop_pct: float = 0.9
    mean: tuple = field(default=(0.5, 0.5, 0.5))
    std: tuple = field(default=(0.5, 0.5, 0.5))

    @property
    def grid(self) -> int:
        return self.image_size // self.stem_stride

    def validate(self) -> None:
        if self.conv not in GRAPH_CONVS:
            raise ValueError(f"conv={self.conv!r}: expected one of {', '.join(GRAPH_CONVS)}")
        if len(self.channels) != len(self.blocks):
            raise ValueError(f"channels {self.channels} and blocks {self.blocks} must have the same length")
        if self.stem_stride < 2 or self.stem_stride & (self.stem_stride - 1):
            raise ValueError(f"stem_stride={self.stem_stride}: expected a power of two >= 2")
        reduction = self.stem_stride * 2 ** (len(self.blocks) - 1)
        if self.image_size % reduction:
            raise ValueError(
                f"image_size={self.image_size} cannot be reduced to a node grid: it must be a multiple of "
                f"{reduction} (stem stride {self.stem_stride}"
                + (f" x 2^{len(self.blocks) - 1} downsamplings" if len(self.blocks) > 1 else "") + ")")
        last_grid = self.image_size // reduction
        for stage, r in enumerate(self.reduce_ratios):
            g = self.image_size // (self.stem_stride * 2 ** stage)
            if g % r:
                raise ValueError(f"stage {stage}: node grid {g}x{g} is not divisible by reduce ratio {r}")
        if last_grid < 1:
            raise ValueError(f"image_size={self.image_size} leaves no nodes in the last stage")
        if any(c % 4 for c in self.channels):
            raise ValueError(f"channels {self.channels} must be multiples of 4 (groups=4 graph conv)")


class FFN(nn.Cell):
    """1x1 conv C -> 4C, BN, GELU, 1x1 conv 4C -> C, BN, DropPath residual."""

    def __init__(self, channels: int, hidden: int, act: str = "gelu", drop_path: float = 0.0):
        super().__init__()
        self.fc1 = conv_bn(channels, hidden)
        self.act = activation(act)
        self.fc2 = conv_bn(hidden, channels)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else Identity()

    def construct(self, x):
        shortcut = x
        x = self.fc2(self.act(self.fc1(x)))
        return self.drop_path(x) + shortcut


class Stem(nn.Cell):
    """Overlapping conv stem: stride-2 3x3 convs (+BN+act) doubling channels up to `out_dim`, then a
    stride-1 3x3 conv + BN. Isotropic ViG: 4 stride-2 convs (out/8, /4, /2, 1); pyramid: 2 (out/2, 1)."""

    def __init__(self, in_dim: int, out_dim: int, n_down: int, act: str = "gelu"):
        super().__init__()
        layers = []
        prev = in_dim
        for i in range(n_down):
            width = out_dim // 2 ** (n_down - 1 - i)
            layers += [Conv2d(prev, width, 3, 2, 1), batch_norm(width), activation(act)]
            prev = width
        layers += [Conv2d(prev, out_dim, 3, 1, 1), batch_norm(out_dim)]
        self.convs = nn.SequentialCell(layers)

    def construct(self, x):
        return self.convs(x)


class Downsample(nn.Cell):
    """Pyramid stage transition: 3x3 stride-2 conv + BN."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = conv_bn(in_dim, out_dim, 3, 2)

    def construct(self, x):
        return self.conv(x)


class Block(nn.SequentialCell):
    """Grapher then FFN; indexed 0/1 like the original's Seq(Grapher, FFN)."""


class ViG(nn.Cell):
    """Isotropic (one stage) or Pyramid (four stages) Vision GNN."""

    def __init__(self, cfg: ViGConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        n_down = int(np.log2(cfg.stem_stride))
        self.stem = Stem(3, cfg.channels[0], n_down, cfg.act)
        grid = cfg.grid
        self.pos_embed = Parameter(Tensor(np.zeros((1, cfg.channels[0], grid, grid), np.float32)),
                                   name="pos_embed")
        depth = sum(cfg.blocks)
        dpr = linspace(0.0, cfg.drop_path_rate, depth)
        k_end = 2 * cfg.k if cfg.k_growth else cfg.k
        num_knn = [int(v) for v in linspace(cfg.k, k_end, depth)]
        last_n = (cfg.image_size // (cfg.stem_stride * 2 ** (len(cfg.blocks) - 1))) ** 2
        # the original divides the last stage's node count (196 for isotropic, 49 for pyramid)
        max_dilation = max(1, last_n // max(num_knn))
        layers, idx = [], 0
        for stage, (width, n_blocks) in enumerate(zip(cfg.channels, cfg.blocks)):
            if stage > 0:
                layers.append(Downsample(cfg.channels[stage - 1], width))
                grid //= 2
            r = cfg.reduce_ratios[stage] if stage < len(cfg.reduce_ratios) else 1
            n_keys = (grid // r) ** 2
            for _ in range(n_blocks):
                dilation = min(idx // 4 + 1, max_dilation) if cfg.use_dilation else 1
                if num_knn[idx] * dilation > n_keys:
                    raise ValueError(
                        f"block {idx}: k={num_knn[idx]} x dilation {dilation} needs more than the {n_keys} "
                        f"nodes of a {grid // r}x{grid // r} grid; lower k or raise image_size")
                layers.append(Block([
                    Grapher(width, num_knn[idx], dilation, cfg.conv, cfg.act, cfg.stochastic, cfg.epsilon,
                            r, grid * grid, dpr[idx], cfg.relative_pos),
                    FFN(width, width * cfg.mlp_ratio, cfg.act, dpr[idx]),
                ]))
                idx += 1
        self.backbone = nn.SequentialCell(layers)
        self.prediction = nn.SequentialCell([
            Conv2d(cfg.channels[-1], cfg.head_dim, 1),
            batch_norm(cfg.head_dim),
            activation(cfg.act),
            nn.Dropout(p=cfg.drop_rate) if cfg.drop_rate > 0 else Identity(),
            Conv2d(cfg.head_dim, cfg.num_classes, 1),
        ])

    def forward_features(self, x):
        x = self.stem(x) + self.pos_embed
        return self.backbone(x)

    def forward_head(self, x):
        x = ops.mean(x, (2, 3), keep_dims=True)
        return self.prediction(x).squeeze(-1).squeeze(-1)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))

    def graph_schedule(self) -> list[dict]:
        """Per-block k, dilation and reduce ratio actually built (for docs and tests)."""
        out = []
        for cell in self.backbone.cell_list:
            if isinstance(cell, Block):
                g = cell[0].graph_conv
                out.append({"k": g.knn.k, "dilation": g.knn.dilation, "r": g.r})
        return out


# ----------------------------------------------------------------------------------------------
# Named variants (table in vig/variants.py, importable without MindSpore)
# ----------------------------------------------------------------------------------------------
def _factory(variant: str):
    def build(**overrides) -> ViG:
        fields = dict(VARIANTS[variant])
        for key, value in overrides.items():
            if key not in ViGConfig.__dataclass_fields__:
                allowed = ", ".join(sorted(ViGConfig.__dataclass_fields__))
                raise TypeError(f"{variant}: unknown override {key!r}; allowed: {allowed}")
            fields[key] = tuple(value) if isinstance(value, list) else value
        cfg = ViGConfig(**fields)
        return graph_builder(cfg.graph)(cfg)

    build.__name__ = variant
    build.__doc__ = f"ViG variant {variant}: {VARIANTS[variant]}"
    return build


register_graph("original", ViG)
for _name in VARIANTS:
    register_model(_name, _factory(_name), config=VARIANTS[_name])
for _alias, _target in SEED_ALIASES.items():
    register_model(_alias, _factory(_target), config=VARIANTS[_target], alias_of=_target)
