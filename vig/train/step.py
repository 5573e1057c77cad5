"""The functional train step: AMP, loss scaling, gradient all-reduce, clipping, optimizer, EMA.

Randomness inside the compiled graph does not restart when the global seed is reset (verified on
MindSpore 2.10: `ms.set_seed` / `set_rng_state` leave a compiled `ops.rand` stream where it was), so a
resumed run could not reproduce the DropPath masks. `make_drop_path_deterministic` therefore swaps each
DropPath for one that reads its per-sample uniforms from a parameter the loop fills before every step
from numpy seeded by (seed, epoch, step, rank).
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, amp, nn, ops

from .. import ops as vig_ops
from ..models.layers import DropPath

NOISE_NAME = "drop_path_noise"


class SeededDropPath(nn.Cell):
    """DropPath with the uniforms taken from row `index` of a shared (layers, batch) noise parameter."""

    def __init__(self, drop_prob: float, noise: Parameter, index: int):
        super().__init__()
        self.keep_prob = 1.0 - float(drop_prob)
        self.noise = noise
        self.index = int(index)

    def construct(self, x):
        if not self.training:
            return x
        batch = x.shape[0]
        u = self.noise[self.index][:batch].reshape((batch,) + (1,) * (x.ndim - 1))
        mask = ops.floor(self.keep_prob + u).astype(x.dtype)
        return x / self.keep_prob * mask


class StepNoise:
    """Host-side source of the per-step DropPath uniforms: a pure function of (seed, epoch, step, rank)."""

    def __init__(self, parameter: Parameter | None, seed: int, rank: int):
        self.parameter, self.seed, self.rank = parameter, int(seed), int(rank)

    def set_step(self, epoch: int, step: int) -> None:
        if self.parameter is None:
            return
        rng = np.random.default_rng([self.seed, epoch, step, self.rank])
        # in place: a compiled graph keeps reading the same memory (see loop.swapped_weights)
        ops.assign(self.parameter, Tensor(rng.random(self.parameter.shape, dtype=np.float32)))


def make_drop_path_deterministic(net: nn.Cell, batch_size: int) -> Parameter | None:
    """Replace every active DropPath in `net` by a SeededDropPath; returns the noise parameter (or None)."""
    targets = []
    for name, cell in net.cells_and_names():
        for child_name, child in list(cell.name_cells().items()):
            if isinstance(child, DropPath) and child.drop_prob > 0:
                targets.append((cell, child_name, child.drop_prob))
    if not targets:
        return None
    noise = Parameter(Tensor(np.zeros((len(targets), batch_size), np.float32)), name=NOISE_NAME,
                      requires_grad=False)
    for index, (parent, child_name, prob) in enumerate(targets):
        setattr(parent, child_name, SeededDropPath(prob, noise, index))
    return noise


def weight_parameters(net: nn.Cell) -> list[Parameter]:
    """Every parameter but the drop-path noise buffer, which is no weight. Told by identity: under msrun
    MindSpore names it after its attribute (drop_path.noise), not NOISE_NAME."""
    noise = {id(cell.noise) for _, cell in net.cells_and_names() if isinstance(cell, SeededDropPath)}
    return [p for p in net.get_parameters() if id(p) not in noise and p.name != NOISE_NAME]


def has_unseeded_randomness(net: nn.Cell) -> list[str]:
    """Names of cells whose training-time randomness is not driven by StepNoise (not exactly resumable)."""
    found = []
    for name, cell in net.cells_and_names():
        if isinstance(cell, DropPath) and cell.drop_prob > 0:
            found.append(name)
        if isinstance(cell, nn.Dropout) and getattr(cell, "p", 0) > 0:
            found.append(name)
        if getattr(cell, "stochastic", False):
            found.append(name)
    return found


def apply_amp(net: nn.Cell, amp_level: str) -> nn.Cell:
    """O0 float32; O2 float16 except BatchNorm; O3 all float16 (O1 is refused by the config schema)."""
    if amp_level == "O0":
        return net
    net = amp.auto_mixed_precision(net, amp_level)
    vig_ops.native_in_float16_cells(net)  # the compiled kernels are float32-only
    return net


class NoLossScaler:
    """Scale 1 with the same interface as amp's scalers (O0 without dynamic scaling)."""

    def __init__(self):
        self.scale_value = Parameter(Tensor(1.0, ms.float32), name="scale_value", requires_grad=False)

    def scale(self, inputs):
        return inputs

    def unscale(self, inputs):
        return inputs

    def adjust(self, grads_finite):
        return True


def build_loss_scaler(cfg: dict):
    """Dynamic (amp.DynamicLossScaler: 2**24, factor 2, window 2000 as the seed) or static scaling."""
    if cfg["is_dynamic_loss_scale"]:
        return amp.DynamicLossScaler(scale_value=2.0 ** 24, scale_factor=2, scale_window=2000)
    if cfg["amp_level"] != "O0" and cfg["loss_scale"] > 1:
        return amp.StaticLossScaler(float(cfg["loss_scale"]))
    return NoLossScaler()


def scaler_parameters(scaler) -> dict:
    """The loss scaler's state as {name: Parameter} (saved in every checkpoint)."""
    params = {"scale_value": scaler.scale_value}
    if hasattr(scaler, "counter"):
        params["counter"] = scaler.counter
    return params


class EMA(nn.Cell):
    """Exponential moving average of all model parameters (BatchNorm statistics included, as timm's
    ModelEmaV2), updated inside the compiled step after every applied optimizer update."""

    def __init__(self, net: nn.Cell, decay: float):
        super().__init__()
        self.decay = float(decay)
        self.sources = weight_parameters(net)
        self.names = [p.name for p in self.sources]
        self.source_tuple = ms.ParameterTuple(self.sources)
        self.shadow = ms.ParameterTuple(
            [Parameter(p.data.copy(), name="ema." + p.name, requires_grad=False) for p in self.sources])
        self.hyper_map = ops.HyperMap()

    def _blend(self, shadow, value):
        return ops.assign(shadow, shadow * self.decay + value.astype(shadow.dtype) * (1.0 - self.decay))

    def construct(self):
        return self.hyper_map(self._blend, self.shadow, self.source_tuple)

    def named_shadows(self) -> dict:
        return dict(zip(self.names, self.shadow))


def clip_value(cfg: dict):
    value = cfg.get("clip_global_norm_value")
    return float(value) if value else None


class ScaledGradients(nn.Cell):
    """(images, labels) -> (loss, gradients of the scaled loss w.r.t. `params`)."""

    def __init__(self, net, loss_fn, scaler, params):
        super().__init__(auto_prefix=False)  # no prefix: the network's parameter names stay its own
        self.net, self.loss_fn, self.scaler = net, loss_fn, scaler
        self.grad_fn = ms.value_and_grad(self.forward, None, params, has_aux=True)

    def forward(self, images, labels):
        loss = self.loss_fn(self.net(images), labels)
        return self.scaler.scale(loss), loss

    def construct(self, images, labels):
        (_, loss), grads = self.grad_fn(images, labels)
        return loss, grads


class ApplyGradients(nn.Cell):
    """Scaled gradients (summed over `micro_batches` micro-batches) -> (all-reduce mean under data
    parallel) -> unscale and average -> finite check -> adjust the scale -> if finite: clip to the global
    norm, optimizer, EMA. Returns (grads_finite, loss_scale)."""

    def __init__(self, optimizer, scaler, clip_norm=None, grad_reducer=None, ema=None, micro_batches=1):
        super().__init__(auto_prefix=False)
        self.optimizer, self.scaler = optimizer, scaler
        self.clip = clip_norm is not None
        self.clip_norm = float(clip_norm) if clip_norm is not None else 1.0
        self.reduce = grad_reducer is not None
        self.grad_reducer = grad_reducer if grad_reducer is not None else ops.identity
        self.use_ema = ema is not None
        self.ema = ema
        self.micro_batches = float(micro_batches)
        self.hyper_map = ops.HyperMap()
        # the two per-gradient passes (compiled kernels on CPU: docs/performance.md)
        self.square_sum, self.scale = vig_ops.square_sum(), vig_ops.scale()

    def _square_sum(self, grad):
        return self.square_sum(grad)

    def _rescale(self, factor, grad):
        return self.scale(grad, factor)

    def construct(self, grads):
        if self.reduce:
            grads = self.grad_reducer(grads)
        # One per-gradient pass (sum of squares) serves the finiteness check, the clipping norm and the
        # unscaling, then one multiply per gradient applies 1/(scale x micro-batches) and the clip together:
        # what amp.all_finite + scaler.unscale + ops.clip_by_global_norm compute (the scale is a power of
        # two, so dividing the norm by it is exact), in ~550 kernel launches instead of ~1900. On CPU those
        # were a third of a ViG-Ti step: MindSpore's Mul by a scalar and Square + ReduceSum take 2-4 ms on a
        # big gradient, so compiled kernels do the two passes there (docs/performance.md). A micro-batch
        # that overflowed makes the sum non-finite: the whole step is skipped and the scale lowered once.
        scaled_norm = ops.sqrt(ops.addn(self.hyper_map(self._square_sum, grads)))
        finite = ops.isfinite(scaled_norm)
        self.scaler.adjust(finite)
        if finite:
            factor = ops.reciprocal(self.scaler.scale_value.value() * self.micro_batches)
            if self.clip:
                norm = scaled_norm * factor
                factor = factor * (self.clip_norm / ops.maximum(norm, self.clip_norm))
            grads = self.hyper_map(ops.partial(self._rescale, factor), grads)
            self.optimizer(grads)
            if self.use_ema:
                self.ema()
        return finite, self.scaler.scale_value.value()


class TrainStep(nn.Cell):
    """One optimizer step on one batch as a Cell (compiled as a whole in GRAPH_MODE): returns (loss,
    grads_finite, loss_scale).

    A Cell rather than an `ms.jit` function on purpose: a jitted closure does not see host-side writes to
    parameters after compiling (checked on 2.10), which per-step noise and resume rely on.
    """

    micro_batches = 1

    def __init__(self, net, loss_fn, optimizer, scaler, clip_norm=None, grad_reducer=None, ema=None):
        super().__init__(auto_prefix=False)
        self.gradients = ScaledGradients(net, loss_fn, scaler, optimizer.parameters)
        self.apply_gradients = ApplyGradients(optimizer, scaler, clip_norm, grad_reducer, ema)

    def construct(self, images, labels):
        loss, grads = self.gradients(images, labels)
        finite, scale = self.apply_gradients(grads)
        return loss, finite, scale


class AccumulateGradients(nn.Cell):
    """(images, labels) -> loss, adding the micro-batch's scaled gradients to float32 accumulators; the
    accumulators are zeroed by `ApplyAccumulated` once it has used them."""

    def __init__(self, net, loss_fn, scaler, params):
        super().__init__(auto_prefix=False)
        self.gradients = ScaledGradients(net, loss_fn, scaler, params)
        self.sums = ms.ParameterTuple([Parameter(Tensor(np.zeros(p.shape, np.float32)), name="accumulated." + p.name,
                                                 requires_grad=False) for p in params])
        self.hyper_map = ops.HyperMap()

    def _add(self, total, grad):
        return ops.assign_add(total, grad.astype(ms.float32))

    def construct(self, images, labels):
        loss, grads = self.gradients(images, labels)
        self.hyper_map(self._add, self.sums, grads)
        return loss


class ApplyAccumulated(nn.Cell):
    """() -> (grads_finite, loss_scale): ApplyGradients on the accumulated sums, which it then zeroes
    (also after a skipped step, so the next step starts clean)."""

    def __init__(self, sums, apply_gradients: ApplyGradients):
        super().__init__(auto_prefix=False)
        self.sums, self.apply_gradients = sums, apply_gradients
        self.hyper_map = ops.HyperMap()

    def _zero(self, total):
        return ops.assign(total, ops.zeros_like(total))

    def construct(self):
        finite, scale = self.apply_gradients(self.sums)
        self.hyper_map(self._zero, self.sums)
        return finite, scale


class AccumulatingStep:
    """Gradient accumulation: one optimizer step per `micro_batches` calls, with the summed gradients of
    every micro-batch (the gradient of one batch micro_batches times as large). Two compiled graphs, the
    micro-batch's forward/backward and the step, so the graph compiled stays the size of TrainStep's.
    Each call returns None until the last micro-batch of a step, then (mean loss, grads_finite,
    loss_scale) as TrainStep does. Under data parallel the gradients are all-reduced once per step."""

    def __init__(self, net, loss_fn, optimizer, scaler, clip_norm=None, grad_reducer=None, ema=None,
                 micro_batches=2):
        if micro_batches < 2:
            raise ValueError(f"micro_batches={micro_batches}: accumulation needs 2 or more (1 is TrainStep)")
        self.micro_batches = int(micro_batches)
        self.accumulate = AccumulateGradients(net, loss_fn, scaler, optimizer.parameters)
        self.apply = ApplyAccumulated(self.accumulate.sums, ApplyGradients(
            optimizer, scaler, clip_norm, grad_reducer, ema, micro_batches))
        self.losses = []

    def __call__(self, images, labels):
        self.losses.append(self.accumulate(images, labels))
        if len(self.losses) < self.micro_batches:
            return None
        finite, scale = self.apply()
        loss = np.mean([float(l.asnumpy()) for l in self.losses], dtype=np.float64)
        self.losses = []
        return Tensor(np.float32(loss)), finite, scale


def build_train_step(net, loss_fn, optimizer, scaler, clip_norm=None, grad_reducer=None, ema=None,
                     micro_batches=1):
    """TrainStep for one batch per optimizer step, AccumulatingStep for `accumulation_step` > 1."""
    if micro_batches == 1:
        return TrainStep(net, loss_fn, optimizer, scaler, clip_norm, grad_reducer, ema)
    return AccumulatingStep(net, loss_fn, optimizer, scaler, clip_norm, grad_reducer, ema, micro_batches)
