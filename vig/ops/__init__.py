"""The ops ViG's layers call, each implemented as a compiled CPU kernel or as MindSpore's native ops.

A layer asks for an op once, when it is built (`self.act = vig.ops.gelu()`), and calls the cell it gets
(`self.act(x)`); which implementation that cell is follows the setting in force while the network is
built, given explicitly:

    with vig.ops.use("native"):                       # a context ...
        net = create_model("vig_ti_224_gelu")
    net = create_model("vig_ti_224_gelu", ops="native")   # ... or the same as an argument
    with vig.ops.use("auto", gelu="native"):          # per op: every op auto, GELU native

Settings: "auto" (the default: the compiled kernel where one covers the op and runs here - on CPU,
g++ available - else native) and "native" (MindSpore's own ops only: what GPU, Ascend and an exported
MINDIR need, as the compiled kernels are calls into a local .so). A kernel cell is float32-only and
runs its native twin for other dtypes; `native_in_float16_cells` swaps it out where amp runs float16.

Implementations live one module each (native.py, kernels.py) as cells with the same call signature, and
`IMPLEMENTATIONS` maps op -> implementation -> cell class. To add a third, e.g. ONNX-exportable
equivalents (issue 13: erf through an approximation, L2 normalisation as x * rsqrt(sum x^2 + eps), a
Reshape instead of a Squeeze): write onnx.py with cells for the ops that need one, add them to the
table under "onnx", and add the setting `"onnx": ("onnx", "native")` to `PREFERENCES`; every op
without an ONNX cell then falls back to its native one, and no layer changes.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

from mindspore import nn

from . import kernels, native, onnx
from .build import library  # noqa: F401  (re-exported: whether a kernel source builds here)
from .conv import Im2ColConv, PerGroupConv

# setting -> implementations in order of preference; the first one usable for an op is built
PREFERENCES = {
    "auto": ("kernel", "native"),
    "native": ("native",),
    "onnx": ("onnx", "native"),  # MindSpore's ONNX exporter: onnx.py's cells where native ones have no mapping
}

IMPLEMENTATIONS = {
    "gelu": {"kernel": kernels.Gelu, "native": native.Gelu, "onnx": onnx.Gelu},
    "conv": {"native": native.Conv, "onnx": onnx.Conv},
    "pointwise_conv": {"kernel": kernels.PointwiseConv, "native": native.PointwiseConv, "onnx": onnx.PointwiseConv},
    "im2col": {"kernel": kernels.Im2Col, "native": native.Im2Col},
    "bias_add": {"kernel": kernels.BiasAdd, "native": native.BiasAdd},
    "batch_norm": {"kernel": kernels.BatchNorm, "native": native.BatchNorm},
    "dilated_knn": {"kernel": kernels.DilatedKnn, "native": native.DilatedKnn, "onnx": onnx.DilatedKnn},
    "gather_neighbours": {"native": native.GatherNeighbours, "onnx": onnx.GatherNeighbours},
    "max_relative": {"kernel": kernels.MaxRelative, "native": native.MaxRelative, "onnx": onnx.MaxRelative},
    "square_sum": {"kernel": kernels.SquareSum, "native": native.SquareSum},
    "scale": {"kernel": kernels.Scale, "native": native.Scale},
}


@dataclass(frozen=True)
class OpsSetting:
    """Which implementation each op gets: `default` for all, `per_op` {op name: setting} overriding it."""

    default: str = "auto"
    per_op: dict = field(default_factory=dict)

    def __post_init__(self):
        for op, choice in [("(default)", self.default), *self.per_op.items()]:
            if op != "(default)" and op not in IMPLEMENTATIONS:
                raise ValueError(f"vig.ops: unknown op {op!r}; expected one of {', '.join(IMPLEMENTATIONS)}")
            if choice not in PREFERENCES:
                raise ValueError(f"vig.ops: setting {choice!r} for {op}; expected one of {', '.join(PREFERENCES)}")

    def preference(self, op: str) -> tuple[str, ...]:
        return PREFERENCES[self.per_op.get(op, self.default)]


_SETTING = contextvars.ContextVar("vig_ops_setting", default=OpsSetting())


def current() -> OpsSetting:
    return _SETTING.get()


@contextlib.contextmanager
def use(setting: str | OpsSetting | None = "auto", **per_op: str):
    """Build the cells created inside with `setting` ("auto" or "native"; None keeps the current one),
    ops named in `per_op` with theirs. Cells built earlier keep what they were built with."""
    if setting is None:
        setting = current()
    if not isinstance(setting, OpsSetting):
        setting = OpsSetting(setting, per_op)
    elif per_op:
        setting = OpsSetting(setting.default, {**setting.per_op, **per_op})
    token = _SETTING.set(setting)
    try:
        yield setting
    finally:
        _SETTING.reset(token)


def create(op: str, *args, **kwargs) -> nn.Cell:
    """The cell implementing `op` (configured by args) under the current setting."""
    table = IMPLEMENTATIONS[op]
    for implementation in current().preference(op):
        cls = table.get(implementation)
        if cls is not None and cls.usable(*args, **kwargs):
            return cls(*args, **kwargs)
    return table["native"](*args, **kwargs)  # every op has one; a setting never ends without it


# ---------------------------------------------------------------------------------------------------
# The ops, as the layers call them (signatures of the cells in native.py)
# ---------------------------------------------------------------------------------------------------
def gelu() -> nn.Cell:
    """x -> exact (erf) GELU."""
    return create("gelu")


def conv2d(kernel_size: int, stride: int, padding: int, groups: int, algorithm: str = "auto") -> nn.Cell:
    """(x, w (Cout, Cin/groups, k, k)) -> convolution without bias.

    `algorithm`: "im2col" (im2col + one 1x1 product), "direct" (the convolution operator; any 1x1
    stride-1 convolution is the 1x1 product), or "auto": where MindSpore's CPU runtime computes the
    convolution (on CPU, the setting not "onnx"), an ungrouped k x k convolution as im2col and a grouped
    1x1 one without its compiled kernel as one ungrouped product per group, else direct. On CPU MindSpore
    hands oneDNN plain NCHW tensors, for which it runs every convolution but an ungrouped 1x1 one as its
    reference kernel (`jit_uni_ncsp:conv+ref`): 5-100x slower than the slices or the per-group products
    (docs/performance.md). onnxruntime's Conv is fast: the "onnx" setting keeps the operator."""
    if algorithm not in ("auto", "im2col", "direct"):
        raise ValueError(f"conv2d algorithm must be 'auto', 'im2col' or 'direct', got {algorithm!r}")
    slow_operator = algorithm == "auto" and kernels.on_cpu() and current().preference("conv")[0] != "onnx"
    if algorithm == "auto":
        algorithm = "im2col" if slow_operator and kernel_size > 1 and groups == 1 else "direct"
    if algorithm == "im2col":
        return Im2ColConv(create("im2col", kernel_size, stride, padding), create("pointwise_conv", 1))
    if kernel_size == 1 and stride == 1 and padding == 0:
        product = create("pointwise_conv", groups)
        if slow_operator and groups > 1 and product.implementation == "native":
            return PerGroupConv(create("pointwise_conv", 1), groups)
        return product
    return create("conv", kernel_size, stride, padding, groups)


def bias_add() -> nn.Cell:
    """(x (B, C, ...), bias (C)) -> x + bias per channel."""
    return create("bias_add")


def batch_norm(eps: float, momentum: float) -> nn.Cell:
    """(x, gamma, beta, moving_mean, moving_var) -> BatchNorm as nn.BatchNorm2d computes it (training:
    batch statistics, the running ones updated with weight `momentum` for the batch)."""
    return create("batch_norm", eps, momentum)


def dilated_knn(k: int, dilation: int, stochastic: bool = False, epsilon: float = 0.0) -> nn.Cell:
    """(x (B, C, N, 1), keys (B, C, M, 1) or None, rel (1, N, M) or None) -> (B, N, k) int32 neighbours."""
    return create("dilated_knn", k, dilation, stochastic, epsilon)


def gather_neighbours() -> nn.Cell:
    """(x (B, C, M, 1) keys, idx (B, N, k)) -> (B, C, N, k) neighbour features."""
    return create("gather_neighbours")


def max_relative() -> nn.Cell:
    """(x (B, C, N, 1), keys (B, C, M, 1) or None (= x), idx (B, N, k)) -> (B, 2C, N, 1): [x, max_j key_j - x]
    interleaved."""
    return create("max_relative")


def square_sum() -> nn.Cell:
    """g -> () float32 sum of squares (the train step's norm; no gradient)."""
    return create("square_sum")


def scale() -> nn.Cell:
    """(g, factor ()) -> g * factor (the train step's unscale and clip; no gradient)."""
    return create("scale")


# ---------------------------------------------------------------------------------------------------
# Built networks
# ---------------------------------------------------------------------------------------------------
def implementations(net: nn.Cell) -> dict[str, str]:
    """{cell name: implementation} of every op cell in `net` (the kernels' native fallbacks excluded)."""
    return {name: cell.implementation for name, cell in net.cells_and_names()
            if isinstance(cell, (native.NativeOp, kernels.KernelOp)) and name.rsplit(".", 1)[-1] != "fallback"}


def native_in_float16_cells(net: nn.Cell) -> int:
    """Swap each kernel cell that amp runs in float16/bfloat16 for its native twin; returns how many.

    Call after `amp.auto_mixed_precision`. In PyNative amp casts each op's inputs as the op runs, after
    the kernel cell's float32 check, so the kernel would get float16 and fail."""
    from mindspore._c_expression import MixedPrecisionType

    low = (MixedPrecisionType.FP16, MixedPrecisionType.BF16)
    swapped = 0
    for _, parent in net.cells_and_names():
        for name, child in list(parent.name_cells().items()):
            if isinstance(child, kernels.KernelOp) and getattr(child, "mixed_precision_type", None) in low:
                setattr(parent, name, child.fallback)
                swapped += 1
    return swapped
