"""The 310 chain on a tiny ViG: preprocess -> export (dynamic batch) -> infer -> postprocess.

The deployed model must give the in-framework network's logits on the same .bin inputs, whatever the
batch size, so the parity gate of the workflow can demand identical accuracy. An ONNX model goes
through the same infer code (onnxruntime) into the same result files.
"""
import importlib.util
import json
import os
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from vig.config import build_model, load_model_config
from vig.data import eval_transforms, load_rgb
from vig.deploy.export import export_model
from vig.deploy.infer import run_inference
from vig.deploy.postprocess import accuracy
from vig.deploy.preprocess import preprocess_split
from vig.weights import WeightsError, load_weights

TINY_YAML = """\
arch: vig_ti_224_gelu
model_overrides: {channels: [32], blocks: [4], k: 4, stem_stride: 8}
image_size: 64
num_classes: 3
crop_pct: 0.875
drop_path_rate: 0.0
mix_up: 0.0
cutmix: 0.0
batch_size: 8
base_lr: 0.001
min_lr: 0.00001
"""
VAL_IMAGES = {"a": 3, "b": 2, "c": 2}  # 7 images: batch 3 -> 3 + 3 + 1


def quiet(_):
    pass


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A random-init tiny ViG with its checkpoint, and a 3-class image folder preprocessed once."""
    root = tmp_path_factory.mktemp("chain")
    (root / "tiny.yaml").write_text(TINY_YAML)
    cfg = load_model_config(root / "tiny.yaml")
    rng = np.random.default_rng(0)
    for split, layout in (("train", {c: 1 for c in VAL_IMAGES}), ("val", VAL_IMAGES)):
        for cls, n in layout.items():
            (root / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "data" / split / cls / f"{split}_{cls}{i}.JPEG", quality=90)
    net = build_model(cfg, training=False, ops="native")
    ms.save_checkpoint(net, str(root / "tiny.ckpt"), append_dict={"epoch_num": 2, "step_num": 10})
    labels = preprocess_split(cfg, root / "data", "val", root / "bins", root / "imagenet_label.json", log=quiet)
    return {"root": root, "cfg": cfg, "net": net, "labels": labels}


@pytest.fixture(scope="module")
def mindir(chain):
    """The checkpoint exported once (export_model itself checks batch sizes 2 then 1)."""
    path = chain["root"] / "export" / "tiny.mindir"
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        export_model(chain["cfg"], chain["root"] / "tiny.ckpt", path, log=quiet)
    finally:
        ms.set_context(mode=previous)
    return path


def test_preprocess_writes_the_eval_transform_and_seed_labels(chain):
    root, cfg = chain["root"], chain["cfg"]
    transform = eval_transforms(64, 0.875, cfg["mean"], cfg["std"], cfg["interpolation"])
    images = sorted((root / "data" / "val").rglob("*.JPEG"))
    assert sorted(os.listdir(root / "bins")) == sorted(f"{p.stem}.bin" for p in images)
    for path in images:
        stored = np.fromfile(root / "bins" / f"{path.stem}.bin", dtype=np.float32)
        assert stored.size == 3 * 64 * 64
        np.testing.assert_array_equal(stored.reshape(1, 3, 64, 64), transform(load_rgb(path))[None])
    expected = {p.name: sorted(VAL_IMAGES).index(p.parent.name) for p in images}
    assert json.loads((root / "imagenet_label.json").read_text()) == expected == chain["labels"]


def test_export_is_readable_and_portable(mindir):
    assert oct(mindir.stat().st_mode & 0o777) == "0o644"  # not MindSpore's 0400
    assert sorted(os.listdir(mindir.parent)) == ["tiny.mindir"]  # no temp folder left
    assert b"vig_cpu_kernels" not in mindir.read_bytes()  # no compiled-kernel calls: runs on any backend


@pytest.mark.parametrize("batch_size", [1, 3])
def test_infer_equals_the_network_and_postprocess_scores_it(chain, mindir, batch_size, tmp_path, pynative):
    root = chain["root"]
    stats = run_inference(mindir, root / "bins", tmp_path / "result_Files",
                          batch_size=batch_size, log=quiet)
    assert stats["images"] == 7 and stats["batch_size"] == batch_size and stats["image_size"] == 64
    assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["max_ms"]
    stems = sorted(p[:-len(".bin")] for p in os.listdir(root / "bins"))
    assert sorted(os.listdir(tmp_path / "result_Files")) == [f"{s}_0.bin" for s in stems]
    inputs = np.concatenate([np.fromfile(root / "bins" / f"{s}.bin", np.float32).reshape(1, 3, 64, 64)
                             for s in stems])
    # the in-framework network on the same batches (PyNative: no graph compile per batch shape)
    want = np.concatenate([chain["net"](ms.Tensor(inputs[i:i + batch_size])).asnumpy()
                           for i in range(0, len(stems), batch_size)])
    got = np.stack([np.fromfile(tmp_path / "result_Files" / f"{s}_0.bin", np.float32) for s in stems])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    acc = accuracy(tmp_path / "result_Files", root / "imagenet_label.json")
    labels = np.array([chain["labels"][f"{s}.JPEG"] for s in stems])
    assert acc["num_images"] == 7 and acc["correct_top1"] == int((want.argmax(1) == labels).sum())
    assert acc["correct_top5"] == 7  # 3 classes: every label is in the top 5


def test_checkpoint_is_loaded_strictly(chain, tmp_path):
    net = chain["net"]
    params = {name: p.asnumpy() for name, p in net.parameters_dict().items()}
    del params["pos_embed"]
    params["prediction.4.weight"] = params["prediction.4.weight"][:2]
    params["backbone.9.fc.weight"] = np.zeros(3, np.float32)
    params["adam_m.stem.convs.0.weight"] = np.zeros(3, np.float32)  # optimizer state is ignored
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], str(tmp_path / "bad.ckpt"))
    with pytest.raises(WeightsError) as info:
        load_weights(net, tmp_path / "bad.ckpt", log=quiet)
    message = str(info.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in message
    assert "pos_embed (1, 32, 8, 8)" in message.split("missing (in the model")[1]
    assert "backbone.9.fc.weight (3,)" in message.split("unexpected (in the checkpoint")[1]
    assert "prediction.4.weight: expected (3, 1024, 1, 1), found (2, 1024, 1, 1)" in message
    assert "adam_m" not in message
    with pytest.raises(ValueError, match="expected a file name ending in .mindir"):
        export_model(chain["cfg"], tmp_path / "bad.ckpt", tmp_path / "model.onnx", log=quiet)


def test_preprocess_refuses_colliding_stems_and_wrong_class_count(chain, tmp_path):
    data = tmp_path / "data"
    for cls, name in (("a", "x.JPEG"), ("b", "x.png"), ("c", "y.JPEG")):
        (data / "val" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(data / "val" / cls / name)
    with pytest.raises(ValueError, match=r"'x': .*a/x.JPEG, .*b/x.png"):
        preprocess_split(chain["cfg"], data, "val", tmp_path / "bins", tmp_path / "labels.json", log=quiet)
    with pytest.raises(ValueError, match="has 3 class folders but num_classes = 5"):
        preprocess_split(dict(chain["cfg"], num_classes=5), data, "val", tmp_path / "bins", tmp_path / "l.json",
                         log=quiet)
    assert sorted(os.listdir(tmp_path)) == ["data"]  # nothing written


def linear_onnx(path, weights, batch="N"):
    """An ONNX classifier logits = flatten(x) @ weights, built with the onnx package's helpers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    side = int(np.sqrt(weights.shape[0] // 3))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, weights.shape[1]])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime 1.32 reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def infer_cli():
    spec = importlib.util.spec_from_file_location(
        "script_infer", Path(__file__).resolve().parents[1] / "workflow_scripts" / "infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_infer_runs_an_onnx_file_into_the_310_result_files(chain, tmp_path, capsys):
    """infer.py --model x.onnx: onnxruntime with --threads, the same <stem>_0.bin files, latency and scoring
    as a MINDIR run; a file that cannot take the inputs is refused before anything is written."""
    root = chain["root"]
    weights = np.random.default_rng(1).standard_normal((3 * 64 * 64, 3)).astype(np.float32)
    model = linear_onnx(tmp_path / "linear.onnx", weights)
    assert infer_cli().main(["--model", str(model), "--input_dir", str(root / "bins"), "--output_dir",
                             str(tmp_path / "result_Files"), "--latency", str(tmp_path / "latency.json"),
                             "--batch_size", "3", "--threads", "1"]) == 0
    stems = sorted(p[:-len(".bin")] for p in os.listdir(root / "bins"))
    assert sorted(os.listdir(tmp_path / "result_Files")) == [f"{s}_0.bin" for s in stems]
    inputs = np.stack([np.fromfile(root / "bins" / f"{s}.bin", np.float32) for s in stems])
    got = np.stack([np.fromfile(tmp_path / "result_Files" / f"{s}_0.bin", np.float32) for s in stems])
    np.testing.assert_allclose(got, inputs @ weights, rtol=1e-5, atol=1e-4)
    stats = json.loads((tmp_path / "latency.json").read_text())
    assert (stats["images"], stats["batch_size"], stats["file_format"]) == (7, 3, "ONNX")
    assert stats["runtime"].startswith("onnxruntime ") and stats["runtime"].endswith("CPU, 1 threads")
    acc = accuracy(tmp_path / "result_Files", root / "imagenet_label.json")
    labels = np.array([chain["labels"][f"{s}.JPEG"] for s in stems])
    assert acc["correct_top1"] == int((got.argmax(1) == labels).sum()) and acc["num_images"] == 7
    capsys.readouterr()
    for bad, message in ((linear_onnx(tmp_path / "small.onnx", weights[:3 * 32 * 32]), "takes input [None, 3, 32, 32]"),
                         (linear_onnx(tmp_path / "fixed.onnx", weights, batch=2), "fixed batch of 2")):
        assert infer_cli().main(["--model", str(bad), "--input_dir", str(root / "bins"), "--output_dir",
                                 str(tmp_path / "bad"), "--latency", str(tmp_path / "bad.json"),
                                 "--batch_size", "3"]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.json").exists()
