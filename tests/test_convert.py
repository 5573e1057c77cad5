"""vig.convert: original PyTorch ViG weights -> MindSpore checkpoint, without executing pickled code.

The .pth files are written by tests/helpers_torchfile.py in torch's own zip format (no torch needed);
when torch is importable the torch.load(weights_only=True) path is exercised as well.
"""
import collections
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from helpers_torchfile import (REAL_TORCH_SAMPLE, BFloat16, TensorView, original_vig_shapes, random_state_dict,
                               save_torch_file, trainable_count)
from vig.convert import (ConversionError, UnsafeCheckpointError, batch_norm_modules, convert_checkpoint,
                         extract_state_dict, load_torch_checkpoint, main, map_key, torch_available)
from vig.models import create_model

READERS = [False] + ([True] if torch_available() else [])  # False: the built-in restricted reader
REPO = Path(__file__).resolve().parents[1]

FULL = {
    "vig_ti_224_gelu": dict(channels=(192,), blocks=(12,)),
    "pvig_ti_224_gelu": dict(channels=(48, 96, 240, 384), blocks=(2, 2, 6, 2), pyramid=True),
}
PUBLISHED_TRAINABLE = {"vig_ti_224_gelu": 7.18e6, "pvig_ti_224_gelu": 10.71e6}
TINY = dict(channels=(32,), blocks=(4,), k=4, image_size=64, stem_stride=8)
TINY_PYRAMID = dict(channels=(16, 24, 32, 48), blocks=(1, 1, 2, 1), k=3, image_size=64)


def expected_ms_name(torch_name: str, torch_names) -> str:
    """The rename the docs promise, written independently of vig.convert: BatchNorm modules are the
    ones with a running_mean in the original's state dict."""
    module, _, leaf = torch_name.rpartition(".")
    if f"{module}.running_mean" not in torch_names:
        return torch_name
    return f"{module}." + {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                           "running_var": "moving_variance"}[leaf]


def assert_every_tensor_landed(model, state: dict) -> None:
    params = {p.name: p.asnumpy() for p in model.get_parameters()}
    kept = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    mapped = {expected_ms_name(k, state): v for k, v in kept.items()}
    assert set(mapped) == set(params), (sorted(set(mapped) ^ set(params)))[:10]
    wrong = [name for name, value in mapped.items() if not np.array_equal(params[name], value)]
    assert not wrong, f"{len(wrong)} parameters hold other values, e.g. {wrong[:5]}"


def tiny_shapes(conv="mr", num_classes=10):
    return original_vig_shapes(channels=(32,), blocks=(4,), num_classes=num_classes, image_size=64,
                               stem_stride=8, conv=conv)


# ----------------------------------------------------------------------------------------------
# Reading .pth files
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_torch", READERS)
def test_reads_a_file_written_by_real_torch(tmp_path, use_torch):
    path = tmp_path / "sample.pth"
    path.write_bytes(REAL_TORCH_SAMPLE)
    state, key = extract_state_dict(load_torch_checkpoint(path, use_torch=use_torch), str(path))
    assert key == "state_dict"
    assert list(state)[:7] == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                               "1.num_batches_tracked"]  # DDP "module." prefix removed
    np.testing.assert_array_equal(state["0.weight"], np.arange(16, dtype=np.float32).reshape(8, 2, 1, 1) / 4)
    np.testing.assert_array_equal(state["1.running_var"], np.arange(8) + 1.0)
    assert state["1.num_batches_tracked"].dtype == np.int64 and state["1.num_batches_tracked"] == 7
    base = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(state["view.t"], base.reshape(3, 4).T)  # strided view of a shared storage
    np.testing.assert_array_equal(state["view.tail"], base[4:])  # offset into the same storage
    assert state["half"].dtype == np.float16 and state["half"].tolist() == [0.5, -2.0]
    assert state["bf16"].dtype == np.float32 and state["bf16"].tolist() == [1.5, -3.0]


@pytest.mark.parametrize("use_torch", READERS)
def test_reads_views_dtypes_and_nested_containers_written_by_the_helper(tmp_path, use_torch):
    base = np.arange(12, dtype=np.float32)
    obj = {"state_dict": collections.OrderedDict(
        t=TensorView(base, 0, (4, 3), (1, 4)), tail=TensorView(base, 4, (2, 4), (4, 1)),
        bf=BFloat16(np.array([[1.5], [-3.0]], np.float32)), h=np.array([0.5, -2], np.float16),
        n=np.array(7, np.int64)), "epoch": 5, "meta": [1, 2.5, None, True, "x", -3, 2**40]}
    loaded = load_torch_checkpoint(save_torch_file(tmp_path / "views.pth", obj), use_torch=use_torch)
    assert loaded["epoch"] == 5 and list(loaded["meta"]) == [1, 2.5, None, True, "x", -3, 2**40]
    state = loaded["state_dict"]
    np.testing.assert_array_equal(state["t"], base.reshape(3, 4).T)
    np.testing.assert_array_equal(state["tail"], base[4:].reshape(2, 4))
    np.testing.assert_array_equal(state["bf"], [[1.5], [-3.0]])
    assert state["h"].dtype == np.float16 and state["n"] == 7


def test_extract_state_dict_unwraps_and_names_what_it_cannot_use():
    w = np.zeros(2, np.float32)
    assert extract_state_dict({"module.a": w, "module.b": w})[0].keys() == {"a", "b"}
    state, key = extract_state_dict({"model": {"a": w}, "state_dict_ema": {"b": w}, "epoch": 1})
    assert key == "model" and list(state) == ["a"]
    state, key = extract_state_dict({"model": {"a": w}, "state_dict_ema": {"b": w}}, key="state_dict_ema")
    assert key == "state_dict_ema" and list(state) == ["b"]
    with pytest.raises(ValueError, match=r"x.pth: not a state dict.*top-level keys: epoch, optimizer"):
        extract_state_dict({"epoch": 1, "optimizer": {}}, "x.pth")
    with pytest.raises(ValueError, match=r"no entry 'ema'; top-level keys: model"):
        extract_state_dict({"model": {"a": w}}, key="ema")
    with pytest.raises(ValueError, match=r"not tensors: 'step'"):
        extract_state_dict({"state_dict": {"a": w, "step": 3}})
    with pytest.raises(ValueError, match=r"both 'a' and 'module.a'"):
        extract_state_dict({"a": w, "module.a": w})


# ----------------------------------------------------------------------------------------------
# Refusing hostile files
# ----------------------------------------------------------------------------------------------
class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Evals:
    def __reduce__(self):
        return eval, ("__import__('os').system('exit 3')",)


@pytest.mark.parametrize("use_torch", READERS)
def test_a_pickle_that_calls_os_system_is_refused_without_running(tmp_path, use_torch):
    marker = tmp_path / "pwned"
    hostile = pickle.dumps({"state_dict": {"w": _RunsShell(marker)}}, protocol=2)
    path = save_torch_file(tmp_path / "evil.pth", {}, pickle_bytes=hostile)
    with pytest.raises(pickle.UnpicklingError) as err:
        load_torch_checkpoint(path, use_torch=use_torch)
    assert not marker.exists()
    assert str(path) in str(err.value)
    if not use_torch:
        assert f"'{os.system.__module__}.system'" in str(err.value)


def test_hostile_pickles_are_refused_by_name_and_the_cli_writes_nothing(tmp_path, capsys):
    path = save_torch_file(tmp_path / "evil.pth", {}, pickle_bytes=pickle.dumps(_Evals(), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match=r"'builtins.eval'"):
        load_torch_checkpoint(path, use_torch=False)

    marker = tmp_path / "pwned"
    bare = tmp_path / "bare.pth"  # a plain pickle, not a torch zip: never unpickled
    bare.write_bytes(pickle.dumps(_RunsShell(marker)))
    with pytest.raises(ValueError, match=r"bare.pth: not a PyTorch zip checkpoint"):
        load_torch_checkpoint(bare, use_torch=False)

    out = tmp_path / "out.ckpt"
    evil = save_torch_file(tmp_path / "e2.pth", {}, pickle_bytes=pickle.dumps(_RunsShell(marker)))
    assert main([str(evil), str(out), "--arch", "vig_ti_224_gelu"]) == 2
    assert not out.exists() and not marker.exists()
    assert "error: " in capsys.readouterr().err


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path):
    base = np.arange(12, dtype=np.float32)
    path = save_torch_file(tmp_path / "overrun.pth", {"w": TensorView(base, 10, (5,), (1,))})
    with pytest.raises(UnsafeCheckpointError, match=r"overrun.pth: tensor of size \(5,\) .* overruns its storage"):
        load_torch_checkpoint(path, use_torch=False)


@pytest.mark.parametrize("view, shown", [
    (TensorView(np.arange(12, dtype=np.float32), -1, (3,), (1,)), r"offset -1, size \(3,\), stride \(1,\)"),
    (TensorView(np.arange(12, dtype=np.float32), 11, (3,), (-1,)), r"offset 11, size \(3,\), stride \(-1,\)"),
    (TensorView(np.arange(12, dtype=np.float32), 0, (-3,), (1,)), r"offset 0, size \(-3,\), stride \(1,\)"),
])
def test_negative_offsets_sizes_and_strides_are_refused(tmp_path, view, shown):
    path = save_torch_file(tmp_path / "layout.pth", {"w": view})
    with pytest.raises(UnsafeCheckpointError, match=rf"layout.pth: bad tensor layout: {shown}; expected a "
                                                    r"non-negative integer offset"):
        load_torch_checkpoint(path, use_torch=False)


@pytest.mark.parametrize("stored_bytes", [40, 44, 50])  # the pickle declares 12 float32 = 48 bytes
def test_a_storage_of_the_wrong_size_is_refused(tmp_path, stored_bytes):
    valid = save_torch_file(tmp_path / "valid.pth", {"w": np.arange(12, dtype=np.float32)})
    with zipfile.ZipFile(valid) as src, zipfile.ZipFile(tmp_path / "sized.pth", "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, (data * 2)[:stored_bytes] if name == "archive/data/0" else data)
    with pytest.raises(UnsafeCheckpointError, match=rf"sized.pth: storage 'archive/data/0' has {stored_bytes} bytes; "
                                                    r"the pickle declares 12 FloatStorage elements of 4 bytes"):
        load_torch_checkpoint(tmp_path / "sized.pth", use_torch=False)


def test_corrupt_files_are_named_in_the_error(tmp_path):
    garbage = save_torch_file(tmp_path / "garbage.pth", {}, pickle_bytes=b"\x80\x02not a pickle")
    with pytest.raises(pickle.UnpicklingError, match=r"garbage.pth: "):
        load_torch_checkpoint(garbage, use_torch=False)

    valid = save_torch_file(tmp_path / "valid.pth", {"w": np.ones(3, np.float32)})
    with zipfile.ZipFile(valid) as src, zipfile.ZipFile(tmp_path / "nodata.pth", "w") as dst:
        dst.writestr("archive/data.pkl", src.read("archive/data.pkl"))  # storages left out
    with pytest.raises(UnsafeCheckpointError, match=r"nodata.pth: storage record 'archive/data/0' is missing"):
        load_torch_checkpoint(tmp_path / "nodata.pth", use_torch=False)


# ----------------------------------------------------------------------------------------------
# Key mapping
# ----------------------------------------------------------------------------------------------
def test_mapping_table():
    names = original_vig_shapes(channels=(48, 96, 240, 384), blocks=(2, 2, 6, 2), pyramid=True)
    bn = batch_norm_modules((), names)
    assert map_key("stem.convs.0.weight", bn) == "stem.convs.0.weight"
    assert map_key("stem.convs.1.weight", bn) == "stem.convs.1.gamma"
    assert map_key("backbone.0.0.fc1.1.running_mean", bn) == "backbone.0.0.fc1.1.moving_mean"
    assert map_key("backbone.0.0.graph_conv.gconv.nn.1.running_var", bn) == \
        "backbone.0.0.graph_conv.gconv.nn.1.moving_variance"
    assert map_key("backbone.2.conv.1.bias", bn) == "backbone.2.conv.1.beta"
    assert map_key("backbone.0.0.relative_pos", bn) == "backbone.0.0.relative_pos"
    assert map_key("prediction.4.bias", bn) == "prediction.4.bias"
    assert map_key("prediction.1.num_batches_tracked", bn) is None
    assert names["backbone.0.0.relative_pos"] == (1, 3136, 196)  # (1, n, n / r^2), r = 4


# ----------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(FULL))
def test_full_ti_checkpoint_lands_on_every_parameter_and_runs(tmp_path, arch, pynative):
    shapes = original_vig_shapes(**FULL[arch])
    assert abs(trainable_count(shapes) / PUBLISHED_TRAINABLE[arch] - 1) < 2e-3  # the layout is the original's
    state = random_state_dict(shapes, seed=len(arch))
    wrapped = ({"state_dict": collections.OrderedDict(("module." + k, v) for k, v in state.items()), "epoch": 299}
               if arch.startswith("vig") else {"state_dict_ema": state, "epoch": 299})
    pth = save_torch_file(tmp_path / f"{arch}.pth", wrapped)
    log = []
    summary = convert_checkpoint(pth, tmp_path / "out" / f"{arch}.ckpt", arch, use_torch=False, log=log.append)
    assert summary["num_classes"] == 1000 and summary["dropped"] == sum(k.endswith("batches_tracked") for k in state)
    assert any("reading" in line for line in log) and any("done in" in line for line in log)
    assert os.listdir(tmp_path / "out") == [f"{arch}.ckpt"]  # no temp file left behind

    model = create_model(arch)
    not_loaded, unused = ms.load_param_into_net(model, ms.load_checkpoint(summary["output"]), strict_load=True)
    assert not_loaded == [] and unused == []
    assert_every_tensor_landed(model, state)

    model.set_train(False)
    logits = model(ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)))
    assert logits.shape == (1, 1000) and np.isfinite(logits.asnumpy()).all()


# Logits of the ORIGINAL PyTorch code (vig_pytorch, eval mode) for small DeepGCNs loaded strictly with
# random_state_dict(original_vig_shapes(...), seed=11), written by tests/reference/original_logits.py (run it
# with torch and the original's folder to regenerate or --check them); that run also asserts the original's
# state_dict() has exactly the keys, order and shapes of original_vig_shapes.
ORIGINAL_LOGITS = json.loads((REPO / "tests" / "data" / "original_logits.json").read_text())["cases"]


@pytest.mark.parametrize("arch", list(ORIGINAL_LOGITS))
def test_converted_weights_reproduce_the_original_logits(tmp_path, arch, pynative):
    overrides = {k: tuple(v) for k, v in ORIGINAL_LOGITS[arch]["overrides"].items()}
    expected = ORIGINAL_LOGITS[arch]["logits"]
    shapes = original_vig_shapes(num_classes=10, pyramid=arch.startswith("pvig"), **overrides)
    pth = save_torch_file(tmp_path / "w.pth", random_state_dict(shapes, seed=11))
    summary = convert_checkpoint(pth, tmp_path / "w.ckpt", arch, use_torch=False, log=lambda _: None, **overrides)
    model = create_model(arch, num_classes=10, **overrides)
    ms.load_param_into_net(model, ms.load_checkpoint(summary["output"]), strict_load=True)
    model.set_train(False)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    np.testing.assert_allclose(model(ms.Tensor(x)).asnumpy()[0], expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("conv", ["mr", "edge", "sage", "gin"])
def test_every_graph_conv_type_converts(tmp_path, conv):
    state = random_state_dict(tiny_shapes(conv), seed=1)
    summary = convert_checkpoint(save_torch_file(tmp_path / "t.pth", state), tmp_path / "t.ckpt",
                                 "vig_ti_224_gelu", use_torch=False, log=lambda _: None, conv=conv, **TINY)
    model = create_model("vig_ti_224_gelu", num_classes=10, conv=conv, **TINY)
    ms.load_param_into_net(model, ms.load_checkpoint(summary["output"]), strict_load=True)
    assert_every_tensor_landed(model, state)


def test_tiny_pyramid_with_relative_pos_converts(tmp_path):
    shapes = original_vig_shapes(channels=(16, 24, 32, 48), blocks=(1, 1, 2, 1), num_classes=10, pyramid=True,
                                 image_size=64)
    state = random_state_dict(shapes, seed=2)
    log = []
    summary = convert_checkpoint(save_torch_file(tmp_path / "p.pth", state), tmp_path / "p.ckpt",
                                 "pvig_ti_224_gelu", use_torch=False, log=log.append, **TINY_PYRAMID)
    model = create_model("pvig_ti_224_gelu", num_classes=10, **TINY_PYRAMID)
    ms.load_param_into_net(model, ms.load_checkpoint(summary["output"]), strict_load=True)
    assert_every_tensor_landed(model, state)
    assert any("5 relative_pos buffers carried over" in line for line in log)


def test_missing_unexpected_and_misshaped_keys_are_all_listed(tmp_path):
    state = random_state_dict(tiny_shapes(), seed=3)
    del state["backbone.1.0.fc1.0.weight"], state["prediction.1.running_var"]
    state["head.weight"] = np.zeros((10, 48), np.float32)
    state["backbone.9.1.fc2.0.bias"] = np.zeros(32, np.float32)
    state["pos_embed"] = np.zeros((1, 32, 7, 7), np.float32)
    state["backbone.3.0.fc2.1.weight"] = np.zeros(31, np.float32)
    state["stem.convs.0.bias"] = np.zeros(8, np.int64)
    pth = save_torch_file(tmp_path / "bad.pth", state)
    out = tmp_path / "bad.ckpt"
    out.write_bytes(b"previous result")
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(pth, out, "vig_ti_224_gelu", use_torch=False, log=lambda _: None, **TINY)
    message = str(err.value)
    for expected in ["2 missing, 2 unexpected, 3 mis-shaped",
                     "backbone.1.0.fc1.0.weight (32, 32, 1, 1)", "prediction.1.moving_variance (1024,)",
                     "head.weight (10, 48)", "backbone.9.1.fc2.0.bias (32,)",
                     "pos_embed: expected (1, 32, 8, 8), found (1, 32, 7, 7)",
                     "backbone.3.0.fc2.1.weight -> backbone.3.0.fc2.1.gamma: expected (32,), found (31,)",
                     "stem.convs.0.bias: expected a floating tensor, found int64"]:
        assert expected in message, f"{expected!r} not in:\n{message}"
    assert len(err.value.missing) == 2 and len(err.value.unexpected) == 2 and len(err.value.mismatched) == 3
    assert out.read_bytes() == b"previous result"  # the old output is untouched
    assert sorted(os.listdir(tmp_path)) == ["bad.ckpt", "bad.pth"]


def test_explicit_num_classes_that_disagrees_is_listed(tmp_path):
    pth = save_torch_file(tmp_path / "t.pth", random_state_dict(tiny_shapes(num_classes=10)))
    with pytest.raises(ConversionError, match=r"prediction.4.weight: expected \(5, 1024, 1, 1\), found "
                                              r"\(10, 1024, 1, 1\)(.|\n)*prediction.4.bias: expected \(5,\)"):
        convert_checkpoint(pth, tmp_path / "t.ckpt", "vig_ti_224_gelu", num_classes=5, use_torch=False,
                           log=lambda _: None, **TINY)


def test_bad_arguments_fail_before_reading(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ValueError, match=r"unknown model 'vig_xl'; valid names: .*pvig_ti_224_gelu"):
        convert_checkpoint(missing, tmp_path / "o.ckpt", "vig_xl")
    with pytest.raises(ValueError, match=r"o.mindir must end in .ckpt"):
        convert_checkpoint(missing, tmp_path / "o.mindir", "vig_ti_224_gelu")
    with pytest.raises(ValueError, match=r"num_classes=0: expected a positive number"):
        convert_checkpoint(missing, tmp_path / "o.ckpt", "vig_ti_224_gelu", num_classes=0)
    with pytest.raises(FileNotFoundError, match=r"nope.pth does not exist"):
        convert_checkpoint(missing, tmp_path / "o.ckpt", "vig_ti_224_gelu")


def test_cli_module_entry_point_reports_errors(tmp_path):
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "vig.convert", str(tmp_path / "in.pth"), str(tmp_path / "o.ckpt"),
                           "--arch", "vig_huge"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: unknown model 'vig_huge'; valid names:" in proc.stderr and "vig_ti_224_gelu" in proc.stderr


def test_a_checkpoint_of_another_variant_gets_an_arch_hint(tmp_path):
    pth = save_torch_file(tmp_path / "iso.pth", random_state_dict(tiny_shapes()))
    with pytest.raises(ConversionError, match=r"is --arch right\? checkpoint has pos_embed \(1, 32, 8, 8\) and 4 "
                                              r"backbone entries; pvig_ti_224_gelu .* has pos_embed \(1, 16, 16, 16\)"):
        convert_checkpoint(pth, tmp_path / "p.ckpt", "pvig_ti_224_gelu", use_torch=False, log=lambda _: None,
                           **TINY_PYRAMID)
