"""ONNX-exportable cells: the ops MindSpore 2.10's ONNX exporter cannot write, in ops it can.

Chosen by the setting "onnx" (`create_model(..., ops="onnx")`, which vig/deploy/export.py uses for
file_format ONNX); every op without a cell here is its native one. What the exporter lacks:

- `Erf` (exact GELU): no entry in its convert map ("Can not find key Erf"). Here
  `erf(x) = tanh(x * P(x^2))`, P a degree-6 polynomial fitted (weighted minimax) to atanh(erf(x)) / x
  on [0, 4]; beyond |x| = 4 the argument is clamped (erf(4) rounds to 1 in float32). Bounds, checked on
  a dense grid against float64 `math.erf` by tests/test_onnx_export.py:
  * the approximation, in exact (float64) arithmetic: |erf_approx - erf| <= ERF_BOUND_EXACT = 6e-8,
    below half a float32 ulp at 1 (5.96e-8); Abramowitz-Stegun 7.1.26 is 1.5e-7;
  * as onnxruntime evaluates the exported graph in float32: <= ERF_BOUND_ONNXRUNTIME = 3.5e-7, the
    float32 rounding plus onnxruntime's own Tanh, which is 2.7e-7 from tanh near saturation (its Erf
    op would be 5.6e-8). (MindSpore's CPU Tanh is 1e-4 from tanh: the setting is for the exporter.)
  GELU uses the same polynomial as x * sigmoid(2 z), z = tanh's argument for erf(x / sqrt 2), since
  (1 + tanh z) / 2 = sigmoid(2 z): three ops fewer; in onnxruntime |gelu_approx - gelu| <=
  GELU_BOUND_PER_X * |x| = 2.5e-7 |x| (Phi within 2.5e-7).
- `Squeeze`: exported with its axis lost (onnxruntime then rejects the next Transpose, "perm size: 3
  does not match input rank: 4"); the node maps here drop their trailing axis by a Reshape instead.
- `ops.gather(..., batch_dims=1)`: written as a plain ONNX Gather on axis 1, which gathers across the
  batch; here GatherElements with the indices broadcast over the channels (gather_rows).
- `Rsqrt` (and `L2Normalize`) have no mapping; F.normalize is x / sqrt(max(sum x^2, eps^2)) here (same
  values as native.l2_normalize within float32 rounding).
- Convolutions: not missing, but kept as one Conv each (Conv, PointwiseConv here): vig.ops.conv2d
  otherwise decomposes k x k and grouped ones into 1x1 products for MindSpore's CPU runtime, whose
  convolution operator is slow there; onnxruntime's is fast.

vig/deploy/onnx_file.py then rewrites the GELUs and gathers into ONNX ops onnxruntime runs faster (Erf,
row Gather). The cells are for inference: the kNN has no stochastic dilation, MaxRelative no gradient
path.
"""
from __future__ import annotations

import math

import mindspore as ms
from mindspore import ops

from . import native

IMPLEMENTATION = "onnx"

ERF_BOUND_EXACT = 6e-8
ERF_BOUND_ONNXRUNTIME = 3.5e-7
GELU_BOUND_PER_X = 2.5e-7
ERF_CLAMP = 4.0
# atanh(erf(x)) / x ~ sum_i ERF_TANH_POLY[i] * x^(2i) on |x| <= 4 (float64 fit, constant term ~ 2/sqrt(pi))
ERF_TANH_POLY = (1.1283797055483415, 0.10276548068446588, -0.00018438186726348548, -0.0006257211485226631,
                 8.971314843878207e-05, -5.985770080803334e-06, 1.5896348527962864e-07)
# the same polynomial for 2 * atanh(erf(x / sqrt 2)) / x in powers of x^2: GELU's sigmoid argument
_GELU_SIGMOID_POLY = tuple(math.sqrt(2.0) * c / 2.0 ** i for i, c in enumerate(ERF_TANH_POLY))


class OnnxOp(native.NativeOp):
    implementation = IMPLEMENTATION


def _horner(t, coefficients):
    p = coefficients[-1] * t + coefficients[-2]
    for c in coefficients[-3::-1]:
        p = p * t + c
    return p


def erf(x):
    """erf(x) within ERF_BOUND_EXACT (onnxruntime's float32: ERF_BOUND_ONNXRUNTIME), in Clip/Mul/Add/Tanh."""
    x = ops.clamp(x, -ERF_CLAMP, ERF_CLAMP)
    return ops.tanh(x * _horner(x * x, ERF_TANH_POLY))


class Gelu(OnnxOp):
    """Exact GELU x * Phi(x) = x * sigmoid(x * Q(x^2)), Q from the erf polynomial (module docstring)."""

    def construct(self, x):
        xc = ops.clamp(x, -ERF_CLAMP * math.sqrt(2.0), ERF_CLAMP * math.sqrt(2.0))
        return x * ops.sigmoid(xc * _horner(xc * xc, _GELU_SIGMOID_POLY))


class Conv(OnnxOp, native.Conv):
    """The convolution operator, one ONNX Conv: onnxruntime runs it fast, unlike MindSpore's CPU runtime,
    for which vig.ops.conv2d decomposes it (this cell's presence keeps it whole)."""


class PointwiseConv(OnnxOp, native.PointwiseConv):
    """The (grouped) 1x1 convolution operator, one ONNX Conv (see Conv)."""


def drop_last_axis(x):
    """(B, C, N, 1) -> (B, C, N) as a Reshape (batch left as -1: the exported graph keeps it open)."""
    return x.reshape(-1, x.shape[1], x.shape[2])


def l2_normalize(x, axis: int = 1, eps: float = 1e-12):
    """F.normalize(p=2): x / max(||x||, eps), as x / sqrt(max(sum x^2, eps^2))."""
    return x / ops.sqrt(ops.maximum((x * x).sum(axis=axis, keepdims=True), eps * eps))


class DilatedKnn(OnnxOp):
    """native.DilatedKnn for inference (no stochastic dilation), written with Reshape and rsqrt."""

    def __init__(self, k: int, dilation: int, stochastic: bool = False, epsilon: float = 0.0):
        super().__init__()
        self.k, self.dilation = k, dilation

    def construct(self, x, y=None, relative_pos=None):
        xn = l2_normalize(drop_last_axis(x), axis=1)  # (B, C, N)
        xq = xn.transpose(0, 2, 1)  # (B, N, C)
        if y is None:
            dist = native.pairwise_distance(xq, xq, xn, (xq * xq).sum(axis=-1, keepdims=True).transpose(0, 2, 1))
        else:
            yn = l2_normalize(drop_last_axis(y), axis=1)
            dist = native.pairwise_distance(xq, yn.transpose(0, 2, 1), yn)
        if relative_pos is not None:
            dist = dist + relative_pos
        _, idx = ops.topk(-dist, self.k * self.dilation)
        return idx[:, :, ::self.dilation].astype(ms.int32)


def gather_rows(feats, idx):
    """feats (B, M, C), idx (B, N, k) -> (B, N, k, C): feats[b, idx[b, n, j]].

    The exporter writes `ops.gather(..., batch_dims=1)` as a plain ONNX Gather on axis 1, which gathers
    across the batch ((B, B, N, C)); GatherElements with the indices broadcast over the channels is the
    batched gather in ops it maps right."""
    n, k, c = idx.shape[1], idx.shape[2], feats.shape[2]
    index = ops.broadcast_to(idx.reshape(-1, n * k, 1), (-1, n * k, c))
    return ops.gather_elements(feats, 1, index).reshape(-1, n, k, c)


class GatherNeighbours(OnnxOp):
    """native.gather_neighbours through gather_rows."""

    def construct(self, x, idx):
        return gather_rows(drop_last_axis(x).transpose(0, 2, 1), idx).transpose(0, 3, 1, 2)


class MaxRelative(OnnxOp):
    """native.MaxRelative's inference path: the max over gathered neighbours, then minus x."""

    def construct(self, x, y, idx):
        y = x if y is None else y
        c, n = x.shape[1], x.shape[2]
        feats = drop_last_axis(y).transpose(0, 2, 1)  # (B, M, C)
        rel = gather_rows(feats, idx).amax(axis=2).transpose(0, 2, 1).reshape(-1, c, n, 1) - x
        return ops.cat([x.reshape(-1, c, 1, n), rel.reshape(-1, c, 1, n)], axis=2).reshape(-1, 2 * c, n, 1)
