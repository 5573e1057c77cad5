"""The seed's optimisation recipe: LR schedule values, parameter groups, loss, overflow handling."""
import math

import numpy as np
import pytest

from vig.config import DEFAULTS
from vig.train.schedule import build_lr_schedule, lr_scale

from conftest import TINY_ISOTROPIC


def _cfg(**kw):
    cfg = dict(DEFAULTS)
    cfg.update(kw)
    return cfg


def test_cosine_schedule_matches_the_seed_formula_at_key_steps():
    cfg = _cfg(base_lr=2e-3, warmup_lr=1e-5, min_lr=6e-6, warmup_length=2, epochs=10, batch_size=16,
               lr_scheduler="cosine_lr", lr_linear_scaling=True)
    steps, world = 5, 8
    lr = build_lr_schedule(cfg, steps, world)
    scale = 16 * 8 / 512
    assert scale == lr_scale(cfg, world) == 0.25
    assert len(lr) == 10 * 5
    # warmup start: warmup_lr (scaled with everything else, as the seed does)
    assert lr[0] == pytest.approx(1e-5 * scale, rel=1e-6)
    # last warmup step t = 2 - 1/5, then warmup end t = W: exactly base_lr
    assert lr[9] == pytest.approx((1e-5 + (1.8 / 2) * (2e-3 - 1e-5)) * scale, rel=1e-6)
    assert lr[10] == pytest.approx(2e-3 * scale, rel=1e-6)
    # mid-cosine t = 6 (half-way through the 8 cosine epochs): base / 2
    assert lr[30] == pytest.approx(0.5 * 2e-3 * scale, rel=1e-6)
    # last step t = 10 - 1/5
    expected = 0.5 * (1 + math.cos(math.pi * (9.8 - 2) / 8)) * 2e-3
    assert lr[-1] == pytest.approx(max(expected, 6e-6) * scale, rel=1e-6)
    # the floor holds everywhere and the schedule only falls after warmup
    assert lr.min() >= 6e-6 * scale * (1 - 1e-6)
    assert np.all(np.diff(lr[10:]) <= 0) and np.all(np.diff(lr[:11]) > 0)
    # the seed clips the whole array at min_lr: a warmup_lr below it starts at the floor
    seed_lr = build_lr_schedule(dict(cfg, warmup_lr=7e-8), steps, world)
    assert seed_lr[0] == pytest.approx(6e-6 * scale, rel=1e-6)


def test_other_schedulers_and_scaling_off():
    base = dict(base_lr=1e-2, warmup_lr=0.0, min_lr=1e-5, warmup_length=1, epochs=6, lr_gamma=0.5, lr_adjust=2,
                lr_linear_scaling=False)
    assert np.allclose(build_lr_schedule(_cfg(**base, lr_scheduler="constant_lr"), 2)[2:], 1e-2)
    exp = build_lr_schedule(_cfg(**base, lr_scheduler="exp_lr"), 2)
    assert exp[2 * 3] == pytest.approx(1e-2 * 0.5 ** 3, rel=1e-6)
    multi = build_lr_schedule(_cfg(**base, lr_scheduler="multistep_lr"), 2)
    assert multi[2 * 5] == pytest.approx(1e-2 * 0.5 ** 2, rel=1e-6)
    assert build_lr_schedule(_cfg(**base, lr_scheduler="cosine_lr"), 2)[0] == pytest.approx(1e-5)  # floored 0


def test_parameter_groups_follow_the_seed_rule():
    from vig.models import create_model
    from vig.train.optim import build_optimizer, param_groups

    net = create_model("pvig_ti_224_gelu", num_classes=10, channels=(16, 24, 32, 48), blocks=(1, 1, 2, 1), k=3,
                       image_size=64)
    no_decay, decay = param_groups(net, 0.05)
    names_decay = {p.name for p in decay["params"]}
    names_free = {p.name for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert "pos_embed" in names_free
    assert all(n.endswith(".weight") for n in names_decay)
    assert any(n.endswith(".bias") for n in names_free)
    assert any(n.endswith(".gamma") for n in names_free) and any(n.endswith(".beta") for n in names_free)
    assert not any("relative_pos" in n for n in names_decay | names_free)  # frozen, not trained
    assert any("relative_pos" in p.name for p in net.get_parameters())
    assert len(names_decay) + len(names_free) == len(net.trainable_params())
    opt = build_optimizer(_cfg(optimizer="momentum"), net, build_lr_schedule(_cfg(epochs=1), 3))
    assert type(opt).__name__ == "Momentum"


def test_soft_target_cross_entropy_matches_numpy(pynative):
    import mindspore as ms

    from vig.train.loss import SoftTargetCrossEntropy

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 7)).astype(np.float32)
    target = rng.dirichlet(np.ones(7), 4).astype(np.float32)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    expected = float((-(target * logp).sum(1)).mean())
    got = float(SoftTargetCrossEntropy()(ms.Tensor(logits), ms.Tensor(target)).asnumpy())
    assert got == pytest.approx(expected, rel=1e-5)


def test_inf_gradient_skips_the_step_and_lowers_the_loss_scale(pynative):
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn

    from vig.models import create_model
    from vig.train.loss import SoftTargetCrossEntropy
    from vig.train.optim import build_optimizer
    from vig.train.step import TrainStep, build_loss_scaler

    ms.set_seed(0)
    net = create_model("vig_ti_224_gelu", num_classes=10, **TINY_ISOTROPIC)
    net.set_train(True)
    cfg = _cfg(epochs=1, is_dynamic_loss_scale=True, amp_level="O0")
    opt = build_optimizer(cfg, net, build_lr_schedule(cfg, 4))
    scaler = build_loss_scaler(cfg)

    class BoostedLoss(nn.Cell):
        """The criterion times a factor the test sets to inf: every gradient becomes non-finite."""

        def __init__(self):
            super().__init__()
            self.inner = SoftTargetCrossEntropy()
            self.boost = Parameter(Tensor(1.0, ms.float32), requires_grad=False)

        def construct(self, logits, target):
            return self.inner(logits, target) * self.boost

    criterion = BoostedLoss()
    step = TrainStep(net, criterion, opt, scaler, clip_norm=5.0)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3, 64, 64)).astype(np.float32))
    y = Tensor(np.eye(10, dtype=np.float32)[[0, 1, 2, 3]])

    _, finite, scale = step(x, y)
    assert bool(finite.asnumpy()) and float(scale.asnumpy()) == 2.0 ** 24
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    global_step = int(opt.global_step.asnumpy().reshape(-1)[0])

    criterion.boost.set_data(Tensor(float("inf"), ms.float32))
    _, finite, scale = step(x, y)
    assert not bool(finite.asnumpy())
    assert float(scale.asnumpy()) == 2.0 ** 23  # lowered by scale_factor 2
    assert int(opt.global_step.asnumpy().reshape(-1)[0]) == global_step  # optimizer not called
    for p in net.trainable_params():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)

    criterion.boost.set_data(Tensor(1.0, ms.float32))
    _, finite, _ = step(x, y)
    assert bool(finite.asnumpy())
    assert any(not np.array_equal(p.asnumpy(), before[p.name]) for p in net.trainable_params())


@pytest.mark.parametrize("clip_norm", [None, 1e-3, 1e3])
def test_train_step_update_equals_unscale_then_clip_by_global_norm(graph_mode, clip_norm):
    """TrainStep's fused finish (one sum-of-squares pass, one multiply per gradient, compiled kernels on
    CPU) must apply what amp's unscale + all_finite + ops.clip_by_global_norm would: with plain SGD at
    lr 1 the weight change is minus the processed gradient, compared with that composition."""
    import mindspore as ms
    from mindspore import Tensor, amp, nn, ops

    from vig.models import create_model
    from vig.train.loss import SoftTargetCrossEntropy
    from vig.train.step import TrainStep

    ms.set_seed(0)
    net = create_model("vig_ti_224_gelu", num_classes=10, **TINY_ISOTROPIC)
    net.set_train(False)  # BatchNorm on running statistics: the reference pass below sees the same network
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3, 64, 64)).astype(np.float32))
    y = Tensor(np.eye(10, dtype=np.float32)[[0, 1, 2, 3]])
    params = net.trainable_params()
    scale = 2.0 ** 10
    loss_fn = SoftTargetCrossEntropy()

    def scaled_loss(a, b):
        return loss_fn(net(a), b) * scale

    grads = ms.value_and_grad(scaled_loss, None, params)(x, y)[1]
    grads = tuple(g / scale for g in grads)
    assert bool(amp.all_finite(grads).asnumpy())
    if clip_norm is not None:
        grads = ops.clip_by_global_norm(grads, clip_norm)
    before = [p.asnumpy().copy() for p in params]
    step = TrainStep(net, loss_fn, nn.SGD(params, learning_rate=1.0), amp.StaticLossScaler(scale), clip_norm)
    _, finite, _ = step(x, y)
    assert bool(finite.asnumpy())
    for p, old, g in zip(params, before, grads):
        np.testing.assert_allclose(old - p.asnumpy(), g.asnumpy(), rtol=1e-4, atol=1e-7, err_msg=p.name)


def test_o2_runs_the_network_in_float16_with_a_float32_loss(pynative):
    import mindspore as ms
    from mindspore import Tensor

    from vig import ops as vig_ops
    from vig.models import create_model
    from vig.train.loss import SoftTargetCrossEntropy
    from vig.train.optim import build_optimizer
    from vig.train.step import TrainStep, apply_amp, build_loss_scaler

    ms.set_seed(0)
    # MindSpore's own ops, as on GPU/Ascend (O2 with the CPU kernels: the test below)
    with vig_ops.use("native"):
        net = apply_amp(create_model("vig_ti_224_gelu", num_classes=10, **TINY_ISOTROPIC), "O2")
    net.set_train(True)
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32))
    logits = net(x).asnumpy()  # amp returns float32, but computed in float16: every value is a float16
    np.testing.assert_array_equal(logits, logits.astype(np.float16).astype(np.float32))
    assert all(p.dtype == ms.float32 for p in net.trainable_params())  # master weights stay float32
    cfg = _cfg(epochs=1, amp_level="O2", is_dynamic_loss_scale=True)
    opt = build_optimizer(cfg, net, build_lr_schedule(cfg, 2))
    with vig_ops.use("native"):
        step = TrainStep(net, SoftTargetCrossEntropy(), opt, build_loss_scaler(cfg), clip_norm=5.0)
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    loss, finite, scale = step(x, Tensor(np.eye(10, dtype=np.float32)[[0, 1, 2, 3]]))
    assert loss.dtype == ms.float32 and np.isfinite(float(loss.asnumpy()))
    # the seed's dynamic scale starts at 2^24: float16 gradients of loss * 2^24 overflow, so the first step
    # is skipped (no update, optimizer step count unchanged) and the scale halves, exactly
    assert not bool(finite.asnumpy()) and float(scale.asnumpy()) == 2.0 ** 23
    assert int(opt.global_step.asnumpy().reshape(-1)[0]) == 0
    changed = [p.name for p in net.trainable_params() if not np.array_equal(p.asnumpy(), before[p.name])]
    assert not changed, f"updated by a step whose gradients overflowed: {changed[:5]}"


@pytest.mark.parametrize("mode", ["graph_mode", "pynative"])
def test_o2_trains_one_step_on_cpu_with_the_compiled_kernels(mode, request, compiled_kernels):
    # Failed before (MindSpore 2.10): in GRAPH_MODE Conv2D got a float16 input with the float32 weight; in
    # PyNative amp cast the im2col kernel's input to float16 after the cell's float32 check
    request.getfixturevalue(mode)
    import mindspore as ms
    from mindspore import Tensor

    from vig import ops as vig_ops
    from vig.models import create_model
    from vig.train.loss import SoftTargetCrossEntropy
    from vig.train.optim import build_optimizer
    from vig.train.step import TrainStep, apply_amp, build_loss_scaler

    ms.set_seed(0)
    net = create_model("vig_ti_224_gelu", num_classes=10, **TINY_ISOTROPIC)
    had_kernels = "kernel" in vig_ops.implementations(net).values()
    assert had_kernels  # the kernel path is the one that failed
    net = apply_amp(net, "O2")
    net.set_train(True)
    # static scale 1024: the seed's dynamic 2^24 overflows float16 and skips the first steps by design
    cfg = _cfg(epochs=1, amp_level="O2", is_dynamic_loss_scale=False, loss_scale=1024)
    step = TrainStep(net, SoftTargetCrossEntropy(), build_optimizer(cfg, net, build_lr_schedule(cfg, 2)),
                     build_loss_scaler(cfg), clip_norm=5.0)
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32))
    loss, finite, _ = step(x, Tensor(np.eye(10, dtype=np.float32)[[0, 1, 2, 3]]))
    assert bool(finite.asnumpy()) and np.isfinite(float(loss.asnumpy()))
    unchanged = [p.name for p in net.trainable_params() if np.array_equal(p.asnumpy(), before[p.name])]
    assert not unchanged, f"not updated by the O2 step: {unchanged[:5]}"
    assert all(np.isfinite(p.asnumpy()).all() for p in net.trainable_params())


class _TwoParams:
    """What build_optimizer needs of a network: named trainable parameters (one decayed, one not)."""

    def __init__(self, weight, bias):
        from mindspore import Parameter, Tensor

        self.params = [Parameter(Tensor(weight), name="fc.weight"), Parameter(Tensor(bias), name="fc.bias")]

    def trainable_params(self):
        return self.params


def test_adamw_takes_beta_and_eps_from_the_config(pynative):
    """Two AdamW steps against the update written out in numpy (MindSpore's AdamWeightDecay: no bias
    correction; decoupled decay on `.weight` only). beta1, beta2 and eps are far apart and eps is as large as
    sqrt(v), so swapping the betas, dropping eps or using the defaults changes the result."""
    from mindspore import Tensor

    from vig.train.optim import build_optimizer

    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    grads = [[rng.standard_normal(a.shape).astype(np.float32) * 0.1 for a in (weight, bias)] for _ in range(2)]
    lr, wd, beta1, beta2, eps = 0.1, 0.05, 0.6, 0.95, 0.03
    cfg = _cfg(optimizer="adamw", beta=[beta1, beta2], eps=eps, weight_decay=wd)
    net = _TwoParams(weight, bias)
    opt = build_optimizer(cfg, net, np.full(4, lr, np.float32))

    expected = {"fc.weight": weight.astype(np.float64), "fc.bias": bias.astype(np.float64)}
    moments = {n: [np.zeros_like(v), np.zeros_like(v)] for n, v in expected.items()}
    order = [p.name for p in opt.parameters]  # the optimizer's order: no-decay group first
    for step_grads in grads:
        by_name = dict(zip(expected, step_grads))
        opt(tuple(Tensor(by_name[name]) for name in order))
        for (name, value), g in zip(expected.items(), step_grads):
            m, v = moments[name]
            m[:] = beta1 * m + (1 - beta1) * g
            v[:] = beta2 * v + (1 - beta2) * g * g
            update = m / (np.sqrt(v) + eps) + (wd * value if name.endswith(".weight") else 0.0)
            expected[name] = value - lr * update
    for p in net.params:
        np.testing.assert_allclose(p.asnumpy(), expected[p.name], rtol=1e-5, atol=1e-6, err_msg=p.name)


@pytest.mark.parametrize("mode", ["pynative", "graph_mode"])  # training compiles the step (graph_mode 0)
def test_ema_blends_after_every_applied_step_and_skips_overflowed_ones(mode, request):
    """shadow <- decay * shadow + (1 - decay) * weights, after the optimizer, and only for steps applied."""
    request.getfixturevalue(mode)
    import mindspore as ms
    from mindspore import Tensor, nn

    from vig.train.loss import SoftTargetCrossEntropy
    from vig.train.step import EMA, TrainStep

    ms.set_seed(0)
    net = nn.SequentialCell([nn.Dense(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dense(8, 10)])  # BN: stats too
    net.set_train(True)
    decay = 0.75
    ema = EMA(net, decay)
    shadows = ema.named_shadows()
    params = {p.name: p for p in net.get_parameters()}
    assert shadows.keys() == params.keys()
    assert all(np.array_equal(shadows[n].asnumpy(), params[n].asnumpy()) for n in params)  # starts as a copy
    lr = Tensor(np.full(3, 0.05, np.float32))
    step = TrainStep(net, SoftTargetCrossEntropy(), nn.SGD(net.trainable_params(), learning_rate=lr),
                     ms.amp.DynamicLossScaler(2.0 ** 10, 2, 1000), ema=ema)
    x = Tensor(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32))
    y = Tensor(np.eye(10, dtype=np.float32)[[0, 1, 2, 3]])
    for _ in range(2):
        old_shadow = {n: s.asnumpy().copy() for n, s in shadows.items()}
        assert bool(step(x, y)[1].asnumpy())
        for name, p in params.items():
            expected = decay * old_shadow[name] + (1 - decay) * p.asnumpy()
            np.testing.assert_allclose(shadows[name].asnumpy(), expected, rtol=1e-6, atol=1e-7, err_msg=name)
    moved = [n for n in params if not np.array_equal(shadows[n].asnumpy(), params[n].asnumpy())]
    assert {"3.weight", "1.moving_mean"} <= set(moved)  # the EMA lags the trained weights and statistics

    old_shadow = {n: s.asnumpy().copy() for n, s in shadows.items()}
    assert not bool(step(x * np.float32(np.inf), y)[1].asnumpy())  # overflow: no update, no EMA blend
    for name in params:
        np.testing.assert_array_equal(shadows[name].asnumpy(), old_shadow[name], err_msg=name)
