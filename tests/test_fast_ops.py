"""The compiled CPU kernels (vig/ops/kernels.py) against MindSpore's native ops: forward and gradient.

Each kernel must compute the same function as the native path it replaces, so that checkpoints and
results do not depend on which path ran. Small shapes keep this file well under a minute.
"""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from vig import ops as vig_ops
from vig.models import create_model
from vig.models.graph import DilatedKnnGraph, MRConv
from vig.ops.native import gather_neighbours
from vig.models.layers import GELU, BatchNorm2d, Conv2d

pytestmark = pytest.mark.usefixtures("compiled_kernels")  # skipped without g++, failed if its build fails

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _fixed_draws():
    """The same random inputs for a test whichever tests run before it."""
    global RNG
    RNG = np.random.default_rng(0)


def tensor(*shape, scale=1.0):
    return Tensor((RNG.standard_normal(shape) * scale).astype(np.float32))


def grad_of(fn, x, weight, weights=None):
    """d/dx (or d/dweights) of sum(fn(x) * weight): a non-uniform upstream gradient. Plain defs only:
    graph mode cannot parse lambdas inside a differentiated function."""
    def loss(v):
        return (fn(v) * weight).sum()
    if weights is not None:
        return ms.grad(loss, grad_position=None, weights=weights)(x).asnumpy()
    return ms.grad(loss)(x).asnumpy()


class Call(nn.Cell):
    """fn(x, *extra) as a Cell, so graph mode compiles it (extra: constant tensors such as indices)."""

    def __init__(self, fn, *extra):
        super().__init__()
        self.fn, self.extra = fn, extra

    def construct(self, x):
        return self.fn(x, *self.extra)


@pytest.fixture(params=["pynative", "graph"])
def mode(request):
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE if request.param == "pynative" else ms.GRAPH_MODE)
    yield request.param
    ms.set_context(mode=previous)


def test_kernels_are_used_on_cpu_and_disabled_by_the_native_setting():
    assert GELU().gelu.implementation == "kernel"
    assert Conv2d(3, 8, 3, 2, 1).conv.im2col.implementation == "kernel"
    assert Conv2d(3, 8, 1).bias_add.implementation == "kernel" and Conv2d(3, 8, 1, bias=False).bias_add is None
    assert BatchNorm2d(4).norm.implementation == "kernel"
    assert Conv2d(3, 8, 1, groups=1).conv.implementation == "kernel"
    assert Conv2d(3, 8, 3, 2, 1).conv.product.implementation == "kernel"
    assert Conv2d(3, 8, 3, 2, 1, impl="direct").conv.implementation == "native"  # a strided k x k conv is not a product
    assert DilatedKnnGraph(4, 2).knn.implementation == "kernel"
    with vig_ops.use("native"):
        assert GELU().gelu.implementation == "native"
        assert Conv2d(3, 8, 3, 2, 1).conv.im2col.implementation == "native"
        assert Conv2d(3, 8, 1).bias_add.implementation == "native"
        assert BatchNorm2d(4).norm.implementation == "native"
        assert Conv2d(3, 8, 1).conv.implementation == "native"
        assert DilatedKnnGraph(4, 2).knn.implementation == "native"


def test_gelu_matches_native_erf_gelu(mode):  # both modes: the custom bprop must compile in a graph
    x = tensor(2, 16, 9, 7, scale=3.0)  # 2016 elements: not a multiple of the kernel's block
    fast = GELU()
    assert fast.gelu.implementation == "kernel"
    native = nn.GELU(approximate=False)
    np.testing.assert_allclose(fast(x).asnumpy(), native(x).asnumpy(), rtol=0, atol=2e-6)
    w = tensor(*x.shape)
    np.testing.assert_allclose(grad_of(fast, x, w), grad_of(native, x, w), rtol=0, atol=5e-6)


def test_gelu_value_does_not_depend_on_position():
    fast = GELU()
    x = tensor(1, 37, scale=2.0)
    alone = fast(x).asnumpy()
    shifted = fast(ops.cat([tensor(1, 5), x], axis=1)).asnumpy()[:, 5:]
    np.testing.assert_array_equal(alone, shifted)


@pytest.mark.parametrize("cin,cout,size,stride", [(3, 8, 17, 2), (6, 5, 8, 1)])
def test_im2col_conv_matches_native_conv(pynative, cin, cout, size, stride):
    fast = Conv2d(cin, cout, 3, stride, 1, impl="im2col")
    with vig_ops.use("auto", im2col="native"):
        slices = Conv2d(cin, cout, 3, stride, 1, impl="im2col")
    native = Conv2d(cin, cout, 3, stride, 1, impl="direct")
    bias = tensor(cout)
    for conv in (fast, slices, native):
        conv.weight.set_data(fast.weight.data.copy())
        conv.bias.set_data(bias.copy())
    x = tensor(2, cin, size, size)
    out = fast(x).asnumpy()
    np.testing.assert_array_equal(out, slices(x).asnumpy())  # same cols, same product
    np.testing.assert_allclose(out, native(x).asnumpy(), rtol=0, atol=1e-4)
    w = tensor(*out.shape)
    np.testing.assert_allclose(grad_of(fast, x, w), grad_of(native, x, w), rtol=0, atol=1e-4)
    np.testing.assert_allclose(grad_of(fast, x, w, fast.weight), grad_of(native, x, w, native.weight),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cin,cout,groups", [(6, 10, 1), (8, 12, 4)])
def test_conv1x1_kernel_matches_native_conv(mode, cin, cout, groups):
    fast = Conv2d(cin, cout, 1, groups=groups, bias=False)
    with vig_ops.use("auto", pointwise_conv="native"):
        native = Conv2d(cin, cout, 1, groups=groups, bias=False)
    assert fast.conv.implementation == "kernel"
    native.weight.set_data(fast.weight.data.copy())
    x = tensor(3, cin, 7, 5)
    out = fast(x).asnumpy()
    np.testing.assert_allclose(out, native(x).asnumpy(), rtol=1e-5, atol=1e-5)
    w = tensor(*out.shape)
    np.testing.assert_allclose(grad_of(fast, x, w), grad_of(native, x, w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_of(fast, x, w, fast.weight), grad_of(native, x, w, native.weight),
                               rtol=1e-5, atol=1e-5)
    # one product per image: an image's output does not depend on the rest of the batch
    np.testing.assert_array_equal(fast(x[1:2]).asnumpy(), out[1:2])


def bn_step(bn, x, weight):
    """One training-mode call: output, gradients (x, gamma, beta) and the updated running statistics."""
    bn.set_train(True)

    def loss(v):
        return (bn(v) * weight).sum()
    out, (dx, (dgamma, dbeta)) = ms.value_and_grad(loss, 0, bn.trainable_params())(x)
    return [out.asnumpy(), dx.asnumpy(), dgamma.asnumpy(), dbeta.asnumpy(), bn.moving_mean.asnumpy(),
            bn.moving_variance.asnumpy()]


@pytest.mark.parametrize("shape", [(4, 6, 5, 7), (3, 5, 11, 1)])
def test_batch_norm_kernel_matches_native(mode, shape):
    fast, native = BatchNorm2d(shape[1]), nn.BatchNorm2d(shape[1], eps=1e-5, momentum=0.9)
    assert fast.norm.implementation == "kernel"
    gamma, beta = tensor(shape[1]), tensor(shape[1])
    for bn in (fast, native):
        bn.gamma.set_data(gamma.copy())
        bn.beta.set_data(beta.copy())
    x, w = tensor(*shape, scale=3.0) + 5.0, tensor(*shape)  # a large mean: the gradient must not cancel
    for _ in range(2):  # the second call starts from updated running statistics
        got, want = bn_step(fast, x, w), bn_step(native, x, w)
        for name, a, b in zip(("loss", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"), got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(b).max()), err_msg=name)
    assert not np.allclose(got[4], 0.0)  # the running mean did move
    fast.set_train(False)
    native.set_train(False)
    np.testing.assert_allclose(fast(x).asnumpy(), native(x).asnumpy(), rtol=1e-5, atol=1e-5)


def test_bias_add_kernel_matches_broadcast_add(mode):
    fast = Conv2d(6, 5, 1)
    with vig_ops.use("auto", bias_add="native"):
        native = Conv2d(6, 5, 1)
    bias = tensor(5)
    for conv in (fast, native):
        conv.weight.set_data(fast.weight.data.copy())
        conv.bias.set_data(bias.copy())
    x = tensor(3, 6, 9, 4)
    out = fast(x).asnumpy()
    np.testing.assert_array_equal(out, native(x).asnumpy())
    w = tensor(*out.shape)
    np.testing.assert_allclose(grad_of(fast, x, w), grad_of(native, x, w), rtol=0, atol=1e-6)
    np.testing.assert_allclose(grad_of(fast, x, w, fast.bias), grad_of(native, x, w, native.bias),
                               rtol=1e-5, atol=1e-5)


def native_max_relative(x, y, idx):
    """The native composition the kernel replaces: [x, max_j y_j - x] interleaved per channel."""
    rel = ops.max(gather_neighbours(y, idx), axis=-1, keepdims=True)[0] - x
    return ops.cat([x.expand_dims(2), rel.expand_dims(2)], axis=2).reshape(x.shape[0], -1, x.shape[2], 1)


@pytest.mark.parametrize("keys", [10, 5])  # separate keys, and average-pooled keys (Pyramid ViG, r > 1)
def test_max_relative_matches_gather_max_interleave(mode, keys):
    x, y = tensor(2, 8, 10, 1), tensor(2, 8, keys, 1)
    idx = Tensor(RNG.integers(0, keys, (2, 10, 4)).astype(np.int32))
    op = vig_ops.kernels.MaxRelative().max_relative  # the primitive: its argmax output too
    value, arg = op(x, y, idx)
    np.testing.assert_array_equal(value.asnumpy(), native_max_relative(x, y, idx).asnumpy())
    picked = np.take_along_axis(y.asnumpy()[..., 0], arg.asnumpy()[..., 0], axis=2)
    np.testing.assert_array_equal(picked - x.asnumpy()[..., 0], value.asnumpy()[:, 1::2, :, 0])
    w = tensor(2, 16, 10, 1)

    def fast(a, b):
        return op(a, b, idx)[0]

    def native(a, b):
        return native_max_relative(a, b, idx)

    for position in (0, 1):  # d/dx and d/dy
        def loss_fast(a, b):
            return (fast(a, b) * w).sum()

        def loss_native(a, b):
            return (native(a, b) * w).sum()
        got = ms.grad(loss_fast, grad_position=position)(x, y).asnumpy()
        want = ms.grad(loss_native, grad_position=position)(x, y).asnumpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_mrconv_gradient_matches_native(pynative):
    fast = MRConv(8, 16)
    with vig_ops.use("native"):
        native = MRConv(8, 16)
    assert fast.max_relative.implementation == "kernel" and native.max_relative.implementation == "native"
    ms.load_param_into_net(native, {p.name: p for p in fast.get_parameters()})
    x = tensor(2, 8, 12, 1)
    idx = Tensor(RNG.integers(0, 12, (2, 12, 3)).astype(np.int32))
    w = tensor(2, 16, 12, 1)
    np.testing.assert_allclose(fast(x, idx).asnumpy(), native(x, idx).asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_of(Call(fast, idx), x, w), grad_of(Call(native, idx), x, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,dilation,keys,relative", [(4, 1, None, False), (3, 2, None, False), (3, 2, 9, True)])
def test_fused_knn_matches_native_knn(pynative, k, dilation, keys, relative):
    fast = DilatedKnnGraph(k, dilation)
    with vig_ops.use("native"):
        native = DilatedKnnGraph(k, dilation)
    assert fast.knn.implementation == "kernel" and native.knn.implementation == "native"
    # random float features: exact distance ties (where the two top-k orders may differ) do not occur
    x = tensor(2, 16, 36, 1)
    y = tensor(2, 16, keys, 1) if keys else None
    rel = tensor(1, 36, keys or 36, scale=0.1) if relative else None
    got, want = fast(x, y, rel).asnumpy(), native(x, y, rel).asnumpy()
    assert got.shape == want.shape == (2, 36, k)
    np.testing.assert_array_equal(got, want)


def loss_function(net):
    loss_fn = nn.CrossEntropyLoss()

    def loss_of(images, labels):
        return loss_fn(net(images), labels)
    return loss_of


def test_tiny_model_training_step_matches_native(graph_mode):
    """A whole ViG (every kernel and its bprop, in graph mode): loss, gradients and BatchNorm running
    statistics as with the native ops. Through BatchNorm over only 32 values per channel, this tiny
    model's gradients move by ~1e-4 of their scale when the input moves by one float32 rounding, with the
    native ops alone; so the gradients are compared within a few times that measured sensitivity (a real
    error in a kernel or its gradient is of the order of the gradient itself)."""
    kw = dict(num_classes=5, channels=(16,), blocks=(2,), k=3, image_size=32, stem_stride=8)
    ms.set_seed(0)
    fast = create_model("vig_ti_224_gelu", **kw)
    native = create_model("vig_ti_224_gelu", ops="native", **kw)
    ms.load_param_into_net(native, {p.name: p for p in fast.get_parameters()})
    x, labels = tensor(2, 3, 32, 32), Tensor(np.array([1, 3], np.int32))
    results = []
    for net, images in ((fast, x), (native, x), (native, x * (1 + 2 ** -23))):
        net.set_train(True)
        loss, grads = ms.value_and_grad(loss_function(net), None, net.trainable_params())(images, labels)
        stats = [p.asnumpy() for p in net.get_parameters() if "moving_" in p.name]
        results.append((float(loss.asnumpy()), [g.asnumpy() for g in grads], stats))
    (fast_loss, fast_grads, fast_stats), (loss, grads, stats), (_, nudged_grads, _) = results
    assert abs(fast_loss - loss) < 1e-5
    scale = max(np.abs(g).max() for g in grads)
    sensitivity = max(np.abs(a - b).max() for a, b in zip(nudged_grads, grads))
    for got, want in zip(fast_grads, grads):
        np.testing.assert_allclose(got, want, rtol=0, atol=max(1e-4 * scale, 4 * sensitivity))
    assert len(fast_stats) == len(stats) > 0
    for got, want in zip(fast_stats, stats):  # BatchNorm running statistics
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
