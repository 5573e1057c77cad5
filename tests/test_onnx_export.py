"""ONNX export through MindSpore's exporter with the "onnx" ops setting, run by onnxruntime.

Every graph conv and a pyramid variant must export, open their batch axis, and give the native-op
network's logits; the erf replacement must stay within its stated bound.
"""
import math
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from vig import ops as vig_ops
from vig.config import build_model, load_model_config
from vig.deploy import onnx_file
from vig.deploy.export import ExportCheckError, check_dynamic_batch, check_file_format, export_model
from vig.deploy.infer import open_onnx
from vig.ops import onnx as onnx_ops

ISOTROPIC = ("arch: vig_ti_224_gelu\nmodel_overrides: {channels: [16], blocks: [%d], k: 3, stem_stride: 8, "
             "head_dim: 32, conv: %s}\n")
# mr (the published models' conv) with 6 blocks: the last two have dilation 2
TINY = {conv: ISOTROPIC % (6 if conv == "mr" else 2, conv) for conv in ("mr", "edge", "sage", "gin")}
# pyramid: relative position, and keys average-pooled by r in the first stages
TINY["pyramid"] = ("arch: pvig_ti_224_gelu\nmodel_overrides: {channels: [8, 16, 16, 24], blocks: [1, 1, 1, 1], k: 3, "
                   "head_dim: 32}\n")
COMMON = "num_classes: 4\ndrop_path_rate: 0.0\n"
IMAGE_SIZE = {"pyramid": 64}  # 32 leaves the last pyramid stage a single node; the others run at 32


def quiet(_):
    pass


def tiny_config(tmp_path, variant):
    path = tmp_path / f"{variant}.yaml"
    path.write_text(TINY[variant] + COMMON + f"image_size: {IMAGE_SIZE.get(variant, 32)}\n")
    return load_model_config(path)


@pytest.mark.parametrize("variant", list(TINY))
def test_every_graph_conv_and_pyramid_exports_and_matches_native_ops(variant, tmp_path, graph_mode):
    cfg = tiny_config(tmp_path, variant)
    native = build_model(cfg, training=False, ops="native")
    # trained-looking BatchNorm statistics, so a wrong op shows in the logits
    rng = np.random.default_rng(1)
    for name, param in native.parameters_and_names():
        if "moving_variance" in name or "gamma" in name:
            param.set_data(ms.Tensor(rng.uniform(0.5, 1.5, param.shape).astype(np.float32)))
        elif "moving_mean" in name or "beta" in name:
            param.set_data(ms.Tensor(rng.normal(0, 0.2, param.shape).astype(np.float32)))
    ms.save_checkpoint(native, str(tmp_path / "w.ckpt"))
    out = export_model(cfg, tmp_path / "w.ckpt", tmp_path / "model.onnx", file_format="ONNX", log=quiet)

    import onnx

    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == onnx_file.BATCH_AXIS_NAME
    op_types = {n.op_type for n in model.graph.node}
    assert "Erf" in op_types and not {"Sigmoid", "GatherElements"} & op_types  # the onnxruntime rewrites ran
    run = open_onnx(out).forward
    size = cfg["image_size"]
    x = np.random.default_rng(2).standard_normal((3, 3, size, size), dtype=np.float32)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    want = native(ms.Tensor(x)).asnumpy()
    got = run(x)[0]
    assert got.shape == (3, 4)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert np.abs(run(x[:1])[0] - want[:1]).max() <= 1e-4 * np.abs(want).max()


class _Erf(ms.nn.Cell):
    def construct(self, x):
        return onnx_ops.erf(x)


def _in_onnxruntime(cell, x, path):
    ms.export(cell, ms.Tensor(x), file_name=str(path), file_format="ONNX")
    return open_onnx(Path(f"{path}.onnx")).forward(x)[0].astype(np.float64)


def test_erf_replacement_is_within_its_stated_bounds_on_a_dense_grid(tmp_path, graph_mode):
    grid = np.linspace(-8.0, 8.0, 320_001, dtype=np.float32)
    exact = np.array([math.erf(v) for v in grid.astype(np.float64)])
    # the approximation itself, in float64 arithmetic
    x = np.clip(grid.astype(np.float64), -onnx_ops.ERF_CLAMP, onnx_ops.ERF_CLAMP)
    poly = np.polynomial.polynomial.polyval(x * x, onnx_ops.ERF_TANH_POLY)
    assert np.abs(np.tanh(x * poly) - exact).max() <= onnx_ops.ERF_BOUND_EXACT
    # exported by MindSpore, run by onnxruntime in float32
    assert np.abs(_in_onnxruntime(_Erf(), grid, tmp_path / "erf") - exact).max() <= onnx_ops.ERF_BOUND_ONNXRUNTIME
    gelu = _in_onnxruntime(vig_ops.onnx.Gelu(), grid, tmp_path / "gelu")
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in grid.astype(np.float64)])
    assert np.all(np.abs(gelu - want) <= onnx_ops.GELU_BOUND_PER_X * np.abs(grid.astype(np.float64)))


def test_the_exporters_own_graph_and_the_rewritten_one_both_match_native_ops(tmp_path, graph_mode):
    """Without onnx_file's rewrites the file holds the erf polynomial and GatherElements: same logits."""
    import onnx

    from vig.deploy.export import _export_onnx

    cfg = tiny_config(tmp_path, "mr")
    native = build_model(cfg, training=False, ops="native")
    exported = build_model(cfg, training=False, ops="onnx")
    ms.load_param_into_net(exported, native.parameters_dict(), strict_load=True)
    _export_onnx(exported, 32, str(tmp_path / "raw.onnx"), rewrite=False)
    model = onnx.load(str(tmp_path / "raw.onnx"))
    assert {"Sigmoid", "GatherElements"} <= {n.op_type for n in model.graph.node}
    # GELUs: 3 in the stem, one per graph conv and FFN of the 6 blocks, 1 in the head; one gather per block
    assert onnx_file.exact_gelu(model) == 16 and onnx_file.flat_gathers(model) == 6
    onnx.save(model, str(tmp_path / "rewritten.onnx"))
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32), dtype=np.float32)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    want = native(ms.Tensor(x)).asnumpy()
    for name in ("raw", "rewritten"):
        got = open_onnx(tmp_path / f"{name}.onnx").forward(x)[0]
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), name


def test_bad_file_format_is_refused_naming_the_formats():
    with pytest.raises(ValueError, match=r"file_format='PTH': expected one of MINDIR, AIR, ONNX"):
        check_file_format("PTH", "CPU")


def test_an_onnx_file_that_differs_from_the_network_fails_the_check_naming_it(tmp_path, graph_mode):
    cfg = tiny_config(tmp_path, "mr")
    net = build_model(cfg, training=False, ops="native")
    ms.save_checkpoint(net, str(tmp_path / "w.ckpt"))
    out = export_model(cfg, tmp_path / "w.ckpt", tmp_path / "model.onnx", file_format="ONNX", check=False,
                       log=quiet)
    other = build_model(cfg, training=False, ops="native")  # other random weights
    with pytest.raises(ExportCheckError, match=r"model\.onnx: for a batch of 2 the exported graph's outputs differ "
                       r"from the network's by up to .* \(allowed .*, or twice the .* the network itself moves"):
        check_dynamic_batch(other, out, 32, file_format="ONNX", log=quiet)
