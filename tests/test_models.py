"""The ViG family against the original's semantics: kNN, graph convs, schedules, counts, modes."""
import math
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from conftest import TINY_ISOTROPIC, TINY_PYRAMID
from vig import ops as vig_ops
from vig.models import count_parameters, create_model, list_models, trace_forward
from vig.config import model_schema
from vig.models.graph import (GRAPH_CONVS, DilatedKnnGraph, EdgeConv, GINConv, GraphSAGE, MRConv,
                              relative_position_bias, _resize_axis_bicubic)
from vig.models.layers import DropPath

ORIGINAL_NAMES = ["vig_ti_224_gelu", "vig_s_224_gelu", "vig_b_224_gelu", "pvig_ti_224_gelu",
                  "pvig_s_224_gelu", "pvig_m_224_gelu", "pvig_b_224_gelu"]


# ------------------------------------------------------------------------------------------------
# NumPy references
# ------------------------------------------------------------------------------------------------
def np_knn(x, k, d, y=None, rel=None):
    """x (B, C, N), y (B, C, M): the k*d nearest by cosine (L2-normalised squared distance), every d-th."""
    def norm(a):
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    xq = norm(x).transpose(0, 2, 1)
    yk = xq if y is None else norm(y).transpose(0, 2, 1)
    dist = (xq ** 2).sum(-1)[:, :, None] - 2 * xq @ yk.transpose(0, 2, 1) + (yk ** 2).sum(-1)[:, None, :]
    if rel is not None:
        dist = dist + rel
    order = np.argsort(dist, axis=-1, kind="stable")[:, :, :k * d]
    return order[:, :, ::d]


def np_gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def np_basic_conv(cell, x):
    """Grouped (4) 1x1 conv + eval-mode BN + exact GELU on (B, C, N, K)."""
    conv, bn = cell[0], cell[1]
    w, b = conv.weight.asnumpy()[:, :, 0, 0], conv.bias.asnumpy()
    groups = conv.groups
    cin_g, cout_g = w.shape[1], w.shape[0] // groups
    outs = []
    for g in range(groups):
        xg = x[:, g * cin_g:(g + 1) * cin_g]
        wg = w[g * cout_g:(g + 1) * cout_g]
        outs.append(np.einsum("oc,bcnk->bonk", wg, xg))
    y = np.concatenate(outs, 1) + b[None, :, None, None]
    mean, var = bn.moving_mean.asnumpy(), bn.moving_variance.asnumpy()
    gamma, beta = bn.gamma.asnumpy(), bn.beta.asnumpy()
    y = (y - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    y = y * gamma[None, :, None, None] + beta[None, :, None, None]
    return np_gelu(y)


def randomise(cell, rng):
    """Random values for every parameter (BN statistics included) so references are not trivial."""
    for p in cell.get_parameters():
        v = rng.standard_normal(p.shape).astype(np.float32) * 0.5
        if p.name.endswith("moving_variance"):
            v = np.abs(v) + 0.5
        p.set_data(Tensor(v))


def gather_np(x, idx):
    """x (B, C, M), idx (B, N, k) -> (B, C, N, k)"""
    return np.stack([x[b][:, idx[b]] for b in range(x.shape[0])])


@pytest.fixture(params=["kernels", "native"])
def ops_impl(request):
    """Cells built with the compiled CPU kernels, or with MindSpore's own ops (vig.ops setting "native":
    what the exported MINDIR runs, whose eval-mode formulations differ from training's)."""
    if request.param == "kernels":
        request.getfixturevalue("compiled_kernels")  # skipped without g++, failed if its build fails
    with vig_ops.use("auto" if request.param == "kernels" else "native"):
        yield request.param


# ------------------------------------------------------------------------------------------------
# kNN
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,d", [(3, 1), (3, 2), (2, 4)])
def test_knn_matches_bruteforce_cosine_and_dilation(pynative, ops_impl, k, d):
    rng = np.random.default_rng(k * 10 + d)
    x = rng.standard_normal((2, 8, 16)).astype(np.float32)
    # scale rows so Euclidean and cosine rankings differ: only cosine may match
    x = x * rng.uniform(0.1, 10, size=(2, 1, 16)).astype(np.float32)
    got = DilatedKnnGraph(k, d)(Tensor(x[..., None])).asnumpy()
    want = np_knn(x, k, d)
    assert got.shape == (2, 16, k)
    np.testing.assert_array_equal(got, want)
    euclid = np.argsort(((x[:, :, :, None] - x[:, :, None, :]) ** 2).sum(1), -1)[:, :, :k * d:d]
    assert not np.array_equal(got, euclid), "ranking must be cosine, not raw Euclidean"


def test_knn_with_reduced_keys_and_relative_position(pynative, ops_impl):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 4, 4)).astype(np.float32)
    y = x.reshape(2, 8, 2, 2, 2, 2).mean((3, 5))  # 2x2 average pooling -> 4 keys
    rel = relative_position_bias(8, 16, 2)
    assert rel.shape == (1, 16, 4)
    got = DilatedKnnGraph(2, 1)(Tensor(x.reshape(2, 8, 16, 1)), Tensor(y.reshape(2, 8, 4, 1)),
                                Tensor(rel)).asnumpy()
    want = np_knn(x.reshape(2, 8, 16), 2, 1, y.reshape(2, 8, 4), rel)
    np.testing.assert_array_equal(got, want)
    without = np_knn(x.reshape(2, 8, 16), 2, 1, y.reshape(2, 8, 4))
    big = rel * 50  # a strong positional term must change the neighbours
    got_big = DilatedKnnGraph(2, 1)(Tensor(x.reshape(2, 8, 16, 1)), Tensor(y.reshape(2, 8, 4, 1)),
                                    Tensor(big)).asnumpy()
    assert not np.array_equal(got_big, without)
    np.testing.assert_array_equal(got_big, np_knn(x.reshape(2, 8, 16), 2, 1, y.reshape(2, 8, 4), big))


def test_relative_position_term_is_negated_sincos_similarity():
    rel = relative_position_bias(16, 16, 1)[0]
    # nodes are closest to themselves: the diagonal is the row minimum (most negative)
    assert np.all(np.argmin(rel, axis=1) == np.arange(16))
    np.testing.assert_allclose(rel, rel.T, atol=1e-6)
    # bicubic (a=-0.75) reproduces linear data exactly away from the borders, as torch's does
    ramp = np.tile(np.arange(16, dtype=np.float64), (3, 1))
    down = _resize_axis_bicubic(ramp, 4, 1)
    np.testing.assert_allclose(down[:, 1:3], [[5.5, 9.5]] * 3, atol=1e-9)


def test_relative_position_buffers_match_the_original():
    """Each Grapher's own relative_pos buffer against the original Grapher's (tests/data/relative_pos.npz,
    written by tests/reference/relative_pos.py from vig_pytorch with torch's bicubic interpolation)."""
    reference = np.load(Path(__file__).parent / "data" / "relative_pos.npz")
    net = create_model("pvig_ti_224_gelu", num_classes=10, **TINY_PYRAMID)
    buffers = [p for p in net.get_parameters() if p.name.endswith("relative_pos")]
    by_shape = {reference[f"{name}_case"][1]: name for name in
                ("tiny_stage1", "tiny_stage2", "tiny_stage3", "tiny_stage4")}
    assert {p.shape[1] for p in buffers} == set(by_shape), [p.shape for p in buffers]
    for p in buffers:
        want = reference[by_shape[p.shape[1]]]
        np.testing.assert_allclose(p.asnumpy()[0], want, rtol=0, atol=1e-6, err_msg=p.name)
    channels, n, r, step = reference["pvig_ti_stage1_case"]  # a real model's size, every step-th row stored
    np.testing.assert_allclose(relative_position_bias(channels, n, r)[0, ::step], reference["pvig_ti_stage1"],
                               rtol=0, atol=1e-6)


def test_stochastic_dilation_only_in_training(pynative):
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((1, 8, 32, 1)).astype(np.float32))
    knn = DilatedKnnGraph(4, 3, stochastic=True, epsilon=1.0)
    regular = DilatedKnnGraph(4, 3)(x).asnumpy()
    knn.set_train(False)
    np.testing.assert_array_equal(knn(x).asnumpy(), regular)
    knn.set_train(True)
    draws = [knn(x).asnumpy() for _ in range(3)]
    full = np_knn(x.asnumpy()[..., 0], 12, 1)  # the k*d nearest candidates
    assert any(not np.array_equal(d, regular) for d in draws)
    for d in draws:  # random picks still come from the k*d nearest, and exactly k of them
        assert d.shape == regular.shape
        for n in range(32):
            assert set(d[0, n]) <= set(full[0, n]) and len(set(d[0, n])) == 4


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_native_max_of_neighbours_equals_gather_then_max_with_ties(mode):
    """The eval-mode gather-max (one gather per neighbour, Maximum) is exact, ties and reduced keys too."""
    from vig.ops.native import gather_neighbours, max_of_neighbours

    rng = np.random.default_rng(11)
    y = rng.integers(-3, 3, size=(2, 8, 5, 1)).astype(np.float32)  # few values: many ties
    idx = Tensor(rng.integers(0, 5, size=(2, 7, 4)).astype(np.int32))

    def both(keys, index):
        return max_of_neighbours(keys, index), ops.max(gather_neighbours(keys, index), axis=-1, keepdims=True)[0]

    ms.set_context(mode=mode)
    try:
        got, want = (ms.jit(both) if mode == ms.GRAPH_MODE else both)(Tensor(y), idx)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert got.shape == (2, 8, 7, 1)
    np.testing.assert_array_equal(got.asnumpy(), want.asnumpy())
    np.testing.assert_array_equal(got.asnumpy()[..., 0], gather_np(y[..., 0], idx.asnumpy()).max(-1))


def test_without_kernels_on_cpu_convs_are_products_and_onnx_keeps_the_operator(pynative):
    """MindSpore's CPU Conv2D is oneDNN's reference kernel for k x k and grouped convolutions, so without
    the kernels (the MINDIR) "auto" computes them as 1x1 products, in training and inference alike:
    im2col for k x k, one ungrouped product per group. Same values as the operator up to rounding; the
    "onnx" setting keeps the operator (onnxruntime's Conv is fast)."""
    from vig.models.layers import Conv2d
    from vig.ops.conv import Im2ColConv, PerGroupConv

    with vig_ops.use("native"):
        kxk, kxk_direct = (Conv2d(5, 7, 3, 2, 1, impl=impl) for impl in ("auto", "direct"))
        grouped, grouped_direct = (Conv2d(8, 12, 1, groups=4, impl=impl) for impl in ("auto", "direct"))
    assert isinstance(kxk.conv, Im2ColConv) and kxk.conv.im2col.implementation == "native"
    assert isinstance(grouped.conv, PerGroupConv) and grouped_direct.conv.groups == 4
    with vig_ops.use("onnx"):
        assert Conv2d(5, 7, 3, 2, 1).conv.implementation == "onnx"
        assert Conv2d(8, 12, 1, groups=4).conv.implementation == "onnx"
    rng = np.random.default_rng(12)
    for conv, direct, cin in ((kxk, kxk_direct, 5), (grouped, grouped_direct, 8)):
        direct.weight.set_data(conv.weight.data.copy())
        direct.bias.set_data(Tensor(rng.standard_normal(direct.bias.shape).astype(np.float32)))
        conv.bias.set_data(direct.bias.data.copy())
        x = Tensor(rng.standard_normal((2, cin, 13, 11)).astype(np.float32))
        want = direct(x).asnumpy()
        for training in (False, True):
            conv.set_train(training)
            np.testing.assert_allclose(conv(x).asnumpy(), want, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Graph convolutions
# ------------------------------------------------------------------------------------------------
def _graph(rng, b=2, c=8, n=6, k=3):
    x = rng.standard_normal((b, c, n)).astype(np.float32)
    idx = rng.integers(0, n, size=(b, n, k)).astype(np.int32)
    return x, idx


def _run_graph_conv(cell_class, seed):
    """A graph conv with random parameters in eval mode on a random tiny graph: (x, idx, cell, output)."""
    rng = np.random.default_rng(seed)
    x, idx = _graph(rng)
    cell = cell_class(8, 16)
    randomise(cell, rng)
    cell.set_train(False)
    return x, idx, cell, cell(Tensor(x[..., None]), Tensor(idx)).asnumpy()


def test_mr_conv_matches_reference(pynative, ops_impl):
    x, idx, cell, got = _run_graph_conv(MRConv, 3)
    xj = (gather_np(x, idx) - x[..., None]).max(-1)
    inter = np.stack([x, xj], axis=2).reshape(2, 16, 6)  # x_0, xj_0, x_1, xj_1, ...
    want = np_basic_conv(cell.nn, inter[..., None])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_edge_conv_matches_reference(pynative):
    x, idx, cell, got = _run_graph_conv(EdgeConv, 4)
    xi = np.repeat(x[..., None], 3, -1)
    feats = np.concatenate([xi, gather_np(x, idx) - xi], 1)
    want = np_basic_conv(cell.nn, feats).max(-1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_graphsage_matches_reference(pynative):
    x, idx, cell, got = _run_graph_conv(GraphSAGE, 5)
    xj = np_basic_conv(cell.nn1, gather_np(x, idx)).max(-1, keepdims=True)
    want = np_basic_conv(cell.nn2, np.concatenate([x[..., None], xj], 1))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_gin_conv_matches_reference(pynative):
    x, idx, cell, got = _run_graph_conv(GINConv, 6)
    eps = cell.eps.asnumpy()[0]
    want = np_basic_conv(cell.nn, ((1 + eps) * x + gather_np(x, idx).sum(-1))[..., None])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_graph_conv_on_reduced_keys(pynative, ops_impl):
    """Pyramid blocks gather neighbours from the pooled key set y, not from x."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 8, 6)).astype(np.float32)
    y = rng.standard_normal((2, 8, 3)).astype(np.float32)
    idx = rng.integers(0, 3, size=(2, 6, 2)).astype(np.int32)
    cell = MRConv(8, 16)
    randomise(cell, rng)
    cell.set_train(False)
    got = cell(Tensor(x[..., None]), Tensor(idx), Tensor(y[..., None])).asnumpy()
    xj = (gather_np(y, idx) - x[..., None]).max(-1)
    want = np_basic_conv(cell.nn, np.stack([x, xj], 2).reshape(2, 16, 6)[..., None])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Variants, schedules, counts
# ------------------------------------------------------------------------------------------------
def test_registry_names_and_aliases():
    names = list_models()
    for name in ORIGINAL_NAMES + ["vig_ti_patch16_224", "vig_s_patch16_224", "vig_b_patch16_224"]:
        assert name in names
    assert list_models(include_aliases=False) == sorted(ORIGINAL_NAMES)


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError) as err:
        create_model("vig_xl_224_gelu")
    for name in ORIGINAL_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize("size", [100, 225])
def test_image_size_that_cannot_make_a_node_grid_is_rejected(size):
    with pytest.raises(ValueError, match=f"image_size={size}.*multiple of 16"):
        create_model("vig_ti_224_gelu", image_size=size)


def test_unknown_override_is_rejected():
    with pytest.raises(TypeError, match="unknown override 'chanels'"):
        create_model("vig_ti_224_gelu", chanels=(8,))


def test_k_and_dilation_schedules_match_the_original():
    ti = create_model("vig_ti_224_gelu").graph_schedule()
    s = create_model("vig_s_224_gelu").graph_schedule()
    assert [b["k"] for b in ti] == [9, 9, 10, 11, 12, 13, 13, 14, 15, 16, 17, 18]
    assert [b["dilation"] for b in ti] == [1] * 4 + [2] * 4 + [3] * 4
    assert [b["k"] for b in s] == [9, 9, 10, 10, 11, 12, 12, 13, 13, 14, 15, 15, 16, 16, 17, 18]
    assert [b["dilation"] for b in s] == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    p = create_model("pvig_ti_224_gelu").graph_schedule()
    assert [b["k"] for b in p] == [9] * 12
    assert [b["r"] for b in p] == [4, 4, 2, 2] + [1] * 8
    assert [b["dilation"] for b in p] == [1] * 4 + [2] * 4 + [3] * 4


PAPER = {  # trainable params (M), multiply-accumulates (G) per image
    "vig_ti_224_gelu": (7.18, 1.3), "vig_s_224_gelu": (22.75, 4.5), "vig_b_224_gelu": (86.84, 17.7),
    "pvig_ti_224_gelu": (10.71, 1.7), "pvig_s_224_gelu": (27.25, 4.6), "pvig_m_224_gelu": (49.53, 8.9),
    "pvig_b_224_gelu": (92.98, 16.8),
}


@pytest.mark.parametrize("name", ORIGINAL_NAMES)
def test_parameter_and_mac_counts_and_full_size_forward(pynative, name):
    model = create_model(name)
    params, macs_g = PAPER[name]
    assert abs(count_parameters(model) / 1e6 - params) / params < 0.002
    trace = trace_forward(model, batch_size=2)  # one 224x224 forward: MACs and output shape
    macs = trace["macs"] / 1e9
    assert abs(macs - macs_g) / macs_g < 0.04, macs  # the paper rounds to 0.1 G
    assert trace["output_shape"] == (2, 1000)


def test_pyramid_m_frozen_relative_position_buffers():
    model = create_model("pvig_m_224_gelu")
    frozen = sum(int(np.prod(p.shape)) for p in model.get_parameters()
                 if p.name.endswith("relative_pos"))
    assert abs(frozen / 1e6 - 2.16) < 0.01
    assert all(not p.requires_grad for p in model.get_parameters() if p.name.endswith("relative_pos"))


# ------------------------------------------------------------------------------------------------
# Training behaviour
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("conv", ["mr", "edge", "sage", "gin"])
def test_every_trainable_parameter_gets_a_gradient(pynative, conv):
    base, tiny = (("pvig_ti_224_gelu", TINY_PYRAMID) if conv == "mr"
                  else ("vig_ti_224_gelu", dict(TINY_ISOTROPIC, blocks=(6,))))  # blocks 4-5 dilate by 2
    ms.set_seed(0)
    model = create_model(base, num_classes=5, conv=conv, **tiny)
    model.set_train(True)
    params = model.trainable_params()
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32))
    y = Tensor(np.array([0, 1, 2, 3], np.int32))

    def forward(x, y):
        return loss_fn(model(x), y)

    grads = ms.value_and_grad(forward, None, params)(x, y)[1]
    dead = [p.name for p, g in zip(params, grads) if not np.any(g.asnumpy() != 0)]
    assert not dead, f"no gradient for {dead}"


def test_drop_path_only_in_training(pynative):
    cell = DropPath(0.5)
    x = Tensor(np.ones((64, 4, 2, 2), np.float32))
    cell.set_train(False)
    np.testing.assert_array_equal(cell(x).asnumpy(), x.asnumpy())
    cell.set_train(True)
    y = cell(x).asnumpy()
    per_sample = y.reshape(64, -1)
    kept = np.all(per_sample == 2.0, axis=1)
    dropped = np.all(per_sample == 0.0, axis=1)
    assert np.all(kept | dropped), "each sample is either dropped or rescaled by 1/keep"
    assert 10 < dropped.sum() < 54


def test_model_drop_path_randomises_training_forward_only(pynative):
    model = create_model("vig_ti_224_gelu", num_classes=5, drop_path_rate=0.5, **TINY_ISOTROPIC)
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32))
    model.set_train(False)
    np.testing.assert_array_equal(model(x).asnumpy(), model(x).asnumpy())
    model.set_train(True)
    assert not np.array_equal(model(x).asnumpy(), model(x).asnumpy())


# ------------------------------------------------------------------------------------------------
# Execution modes and batching
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base,tiny", [("vig_ti_224_gelu", TINY_ISOTROPIC), ("pvig_ti_224_gelu", TINY_PYRAMID)])
def test_batch_independence_in_eval(pynative, base, tiny):
    ms.set_seed(1)
    model = create_model(base, num_classes=7, **tiny)
    randomise_bn_stats(model)
    model.set_train(False)
    x = np.random.default_rng(2).standard_normal((3, 3, 64, 64)).astype(np.float32)
    batch = model(Tensor(x)).asnumpy()
    single = np.concatenate([model(Tensor(x[i:i + 1])).asnumpy() for i in range(3)])
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-5)


def randomise_bn_stats(model):
    rng = np.random.default_rng(3)
    for p in model.get_parameters():
        if p.name.endswith("moving_mean"):
            p.set_data(Tensor(rng.standard_normal(p.shape).astype(np.float32) * 0.1))
        elif p.name.endswith("moving_variance"):
            p.set_data(Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))


@pytest.mark.parametrize("base,tiny", [("vig_ti_224_gelu", dict(TINY_ISOTROPIC, blocks=(6,))),
                                       ("pvig_ti_224_gelu", TINY_PYRAMID)])
def test_graph_and_pynative_modes_agree(base, tiny):
    x = Tensor(np.random.default_rng(4).standard_normal((2, 3, 64, 64)).astype(np.float32))
    outs = []
    for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
        ms.set_context(mode=mode)
        try:
            ms.set_seed(5)
            model = create_model(base, num_classes=6, **tiny)
            randomise_bn_stats(model)
            model.set_train(False)
            outs.append(model(x).asnumpy())
        finally:
            ms.set_context(mode=ms.PYNATIVE_MODE)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def _square_loss(cell):
    def loss(inp):
        return (cell(inp) ** 2).sum()
    return loss


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
@pytest.mark.parametrize("stride,size", [(1, (13, 11)), (2, (13, 11)), (2, (16, 16)), (2, (3, 3))])
def test_im2col_conv_equals_native_conv_forward_and_backward(mode, stride, size):
    from vig.models.layers import Conv2d

    ms.set_context(mode=mode)
    try:
        rng = np.random.default_rng(8)
        x = Tensor(rng.standard_normal((2, 5) + size).astype(np.float32))
        fast = Conv2d(5, 7, 3, stride, 1, impl="im2col")
        native = Conv2d(5, 7, 3, stride, 1, impl="direct")
        native.weight.set_data(fast.weight.data)
        native.bias.set_data(Tensor(rng.standard_normal(7).astype(np.float32)))
        fast.bias.set_data(native.bias.data)
        results = []
        for conv in (fast, native):
            loss = _square_loss(conv)  # a closure: graph mode cannot parse default-argument binding
            results.append((conv(x).asnumpy(), ms.value_and_grad(loss, 0, conv.trainable_params())(x)[1]))
        (y_fast, (gx_fast, gw_fast)), (y_nat, (gx_nat, gw_nat)) = results
        np.testing.assert_allclose(y_fast, y_nat, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gx_fast.asnumpy(), gx_nat.asnumpy(), rtol=1e-4, atol=1e-4)
        for a, b in zip(gw_fast, gw_nat):
            np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-3)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_schema_offers_exactly_the_graph_convs_the_model_builds():
    """The model schema's conv enum is a second list of names: it must not drift from the class table."""
    conv = model_schema()["properties"]["model_overrides"]["properties"]["conv"]
    assert sorted(conv["enum"]) == sorted(GRAPH_CONVS)
