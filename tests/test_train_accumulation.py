"""Gradient accumulation (accumulation_step: N): N micro-batches per optimizer step update like one batch N
times as large, an overflow in any micro-batch skips the whole step, and the global batch is what the LR
scaling uses."""
import numpy as np
import pytest

from vig.config import load_model_config
from vig.train.schedule import lr_scale


SMALL = dict(channels=(16,), blocks=(2,), k=3, image_size=32, stem_stride=8)  # compiles in seconds


def _twin_networks():
    """Two tiny ViGs with equal weights, in eval mode: BatchNorm on running statistics and no DropPath, so
    a micro-batch of 2 is normalised exactly as the same images inside a batch of 4 (in training mode each
    micro-batch would bring its own batch statistics and the two updates would differ by design)."""
    import mindspore as ms

    from vig.models import create_model

    ms.set_seed(0)
    nets = [create_model("vig_ti_224_gelu", num_classes=10, **SMALL) for _ in range(2)]
    for p, q in zip(nets[0].trainable_params(), nets[1].trainable_params()):
        q.set_data(p.data.copy())
    for net in nets:
        net.set_train(False)
    return nets


def _steps(scale=2.0 ** 10):
    """(one-batch TrainStep, 2-micro-batch AccumulatingStep), each with plain SGD: a weight's change is
    the processed gradient times the LR, so the test compares gradients, not an optimizer's normalisation."""
    from mindspore import amp, nn

    from vig.train.loss import SoftTargetCrossEntropy
    from vig.train.step import AccumulatingStep, TrainStep, build_train_step

    one, accumulated = _twin_networks()
    whole = build_train_step(one, SoftTargetCrossEntropy(), nn.SGD(one.trainable_params(), learning_rate=0.05),
                             amp.DynamicLossScaler(scale, 2, 1000))
    split = build_train_step(accumulated, SoftTargetCrossEntropy(),
                             nn.SGD(accumulated.trainable_params(), learning_rate=0.05),
                             amp.DynamicLossScaler(scale, 2, 1000), micro_batches=2)
    assert isinstance(whole, TrainStep) and isinstance(split, AccumulatingStep)
    return (one, whole), (accumulated, split)


def _batch(seed, size=4):
    from mindspore import Tensor

    rng = np.random.default_rng(seed)
    return (rng.standard_normal((size, 3, 32, 32)).astype(np.float32),
            rng.dirichlet(np.ones(10), size).astype(np.float32)), Tensor


def _weights(net):
    return [p.asnumpy().copy() for p in net.trainable_params()]


def _assert_same_update(before_a, net_a, before_b, net_b, names):
    for old_a, a, old_b, b, name in zip(before_a, _weights(net_a), before_b, _weights(net_b), names):
        change = old_a - a
        np.testing.assert_allclose(old_b - b, change, rtol=1e-5, atol=1e-5 * np.abs(change).max(), err_msg=name)


def test_two_micro_batches_update_like_one_batch_of_both(graph_mode):
    # unclipped, so the update shows the gradient's size: a sum where the mean belongs would double it (the
    # clipping norm is scaled by the same factor, and clipping itself is tested on TrainStep)
    (one, whole), (accumulated, split) = _steps()
    names = [p.name for p in one.trainable_params()]
    for seed in (0, 1):  # the second step starts from sums the first one zeroed
        (x, y), Tensor = _batch(seed)
        before, before_split = _weights(one), _weights(accumulated)
        loss, finite, _ = whole(Tensor(x), Tensor(y))
        assert split(Tensor(x[:2]), Tensor(y[:2])) is None  # the first micro-batch applies nothing
        for old, now in zip(before_split, _weights(accumulated)):
            np.testing.assert_array_equal(now, old)
        split_loss, split_finite, _ = split(Tensor(x[2:]), Tensor(y[2:]))
        assert bool(finite.asnumpy()) and bool(split_finite.asnumpy())
        assert float(split_loss.asnumpy()) == pytest.approx(float(loss.asnumpy()), rel=1e-6)
        _assert_same_update(before, one, before_split, accumulated, names)
        assert any(not np.array_equal(old, now) for old, now in zip(before, _weights(one)))


def test_overflow_in_the_second_micro_batch_skips_the_whole_step_and_halves_the_scale(graph_mode):
    (one, whole), (accumulated, split) = _steps(scale=2.0 ** 24)
    names = [p.name for p in one.trainable_params()]
    optimizer = split.apply.apply_gradients.optimizer
    (x, y), Tensor = _batch(0)
    before = _weights(accumulated)
    assert split(Tensor(x[:2]), Tensor(y[:2])) is None
    _, finite, scale = split(Tensor(x[2:] * np.float32(np.inf)), Tensor(y[2:]))
    assert not bool(finite.asnumpy()) and float(scale.asnumpy()) == 2.0 ** 23  # halved once, for the step
    assert int(optimizer.global_step.asnumpy().reshape(-1)[0]) == 0  # the optimizer never ran
    for old, now, name in zip(before, _weights(accumulated), names):
        np.testing.assert_array_equal(now, old, err_msg=name)  # not even the finite first micro-batch applied

    # the next step starts from zeroed sums: it updates exactly as one clean batch does
    whole(Tensor(x), Tensor(y))
    assert split(Tensor(x[:2]), Tensor(y[:2])) is None
    _, finite, scale = split(Tensor(x[2:]), Tensor(y[2:]))
    assert bool(finite.asnumpy()) and float(scale.asnumpy()) == 2.0 ** 23
    _assert_same_update(before, one, before, accumulated, names)


def test_the_schema_takes_accumulation_and_the_lr_scales_with_the_global_batch(tmp_path):
    from vig.config import ConfigError

    path = tmp_path / "acc.yaml"
    path.write_text("arch: vig_s_patch16_224\nbatch_size: 128\naccumulation_step: 4\n")
    cfg = load_model_config(path)
    assert cfg["accumulation_step"] == 4
    assert lr_scale(cfg, world_size=2) == 128 * 2 * 4 / 512  # the seed's 1024 on 2 devices
    path.write_text("arch: vig_s_patch16_224\naccumulation_step: 0\n")
    with pytest.raises(ConfigError, match=r"key 'accumulation_step' = 0.*minimum"):
        load_model_config(path)
