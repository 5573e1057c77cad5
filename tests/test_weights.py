"""vig.weights: starting from existing weights (a project checkpoint or an original PyTorch .pth), strictly,
through `--pretrained` on train.py, evaluate.py and export.py; fine-tuning with a fresh classifier."""
import json
import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from helpers_torchfile import original_vig_shapes, random_state_dict, save_torch_file
from PIL import Image

from vig.config import load_model_config, training_hash
from vig.convert import convert_checkpoint
from vig.models import create_model
from vig.weights import FORMATS, WeightFormat, WeightsError, detect_format, load_weights, register_format

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow_scripts"
TINY = dict(channels=(16,), blocks=(2,), k=3, image_size=32, stem_stride=8)
TINY_YAML = """\
arch: vig_ti_224_gelu
model_overrides: {channels: [16], blocks: [2], k: 3, stem_stride: 8}
image_size: 32
num_classes: 4
crop_pct: 1.0
drop_path_rate: 0.0
auto_augment: null
re_prob: 0.0
mix_up: 0.0
cutmix: 0.0
base_lr: 0.001
lr_linear_scaling: false
warmup_lr: 0.0001
min_lr: 0.00001
warmup_length: 1
epochs: 1
batch_size: 4
amp_level: O0
is_dynamic_loss_scale: false
num_parallel_workers: 1
device_target: CPU
log_every: 1
"""


def quiet(_):
    pass


def torch_state(num_classes=4, seed=0):
    shapes = original_vig_shapes(channels=TINY["channels"], blocks=TINY["blocks"], num_classes=num_classes,
                                 image_size=TINY["image_size"], stem_stride=TINY["stem_stride"])
    return random_state_dict(shapes, seed=seed)


def tiny_net(num_classes=4):
    return create_model("vig_ti_224_gelu", num_classes=num_classes, **TINY)


def values(net) -> dict:
    return {p.name: p.asnumpy() for p in net.get_parameters()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same random weights twice: as the original's .pth (written without torch) and as a project .ckpt."""
    root = tmp_path_factory.mktemp("weights")
    pth = save_torch_file(root / "tiny.pth", torch_state())
    ckpt = root / "tiny.ckpt"
    convert_checkpoint(pth, ckpt, "vig_ti_224_gelu", use_torch=False, log=quiet, **TINY)
    return {"root": root, "pth": pth, "ckpt": ckpt}


# ----------------------------------------------------------------------------------------------
# The loader
# ----------------------------------------------------------------------------------------------
def test_pth_and_project_checkpoint_give_the_same_network(files):
    from_pth, from_ckpt, fresh = tiny_net(), tiny_net(), tiny_net()
    lines = []
    report = load_weights(from_pth, files["pth"], log=lines.append)
    counters = sum(name.endswith("num_batches_tracked") for name in torch_state())
    assert report.format.startswith("original PyTorch") and report.dropped == counters == 15
    assert load_weights(from_ckpt, files["ckpt"], log=lines.append).format == "project"
    a, b, c = values(from_pth), values(from_ckpt), values(fresh)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert all(not np.array_equal(a[n], c[n]) for n in ("pos_embed", "prediction.4.weight", "stem.convs.1.gamma"))
    assert "loaded" in lines[0] and "tiny.pth" in lines[0] and report.sha256[:16] in lines[0]


def test_a_training_state_file_loads_its_ema_weights(tmp_path, files):
    source = tiny_net()
    load_weights(source, files["ckpt"], log=quiet)
    entries = [{"name": f"net:{p.name}", "data": ms.Tensor(np.zeros(p.shape, np.float32))}
               for p in source.get_parameters()]
    entries += [{"name": f"ema:{p.name}", "data": p} for p in source.get_parameters()]
    entries += [{"name": "opt:adam_m.pos_embed", "data": ms.Tensor(np.zeros((1,), np.float32))}]
    ms.save_checkpoint(entries, str(tmp_path / "state-e0001.ckpt"))
    net = tiny_net()
    assert load_weights(net, tmp_path / "state-e0001.ckpt", log=quiet).format == "project training state"
    want = values(source)
    assert all(np.array_equal(v, want[n]) for n, v in values(net).items())


def test_shape_mismatch_missing_and_unexpected_names_are_listed_with_shapes(tmp_path):
    state = torch_state()
    del state["backbone.1.0.fc1.0.weight"]
    state["pos_embed"] = np.zeros((1, 16, 3, 3), np.float32)
    state["head.fc.weight"] = np.zeros((4, 7), np.float32)
    net = tiny_net()
    before = values(net)
    with pytest.raises(WeightsError) as err:
        load_weights(net, save_torch_file(tmp_path / "bad.pth", state), log=quiet)
    message = str(err.value)
    for expected in ["1 missing, 1 unexpected, 1 mis-shaped", "backbone.1.0.fc1.0.weight (16, 16, 1, 1)",
                     "head.fc.weight (4, 7)", "pos_embed: expected (1, 16, 4, 4), found (1, 16, 3, 3)"]:
        assert expected in message, message
    assert all(np.array_equal(v, before[n]) for n, v in values(net).items())  # nothing half-loaded


def test_fine_tuning_starts_only_the_classifier_fresh_and_says_so(files):
    strict = tiny_net(num_classes=3)
    with pytest.raises(WeightsError, match=r"prediction.4.weight: expected \(3, 1024, 1, 1\), found \(4, 1024"):
        load_weights(strict, files["pth"], log=quiet)
    net, lines = tiny_net(num_classes=3), []
    initial = values(net)
    report = load_weights(net, files["pth"], allow_new_head=True, log=lines.append)
    assert sorted(report.fresh) == ["prediction.4.bias", "prediction.4.weight"]
    fine_tune = [line for line in lines if "fine-tuning" in line]
    assert len(fine_tune) == 1 and "has 4 classes, the network 3" in fine_tune[0] and "prediction.4" in fine_tune[0]
    got, reference = values(net), tiny_net()
    load_weights(reference, files["pth"], log=quiet)
    pretrained = values(reference)
    assert np.array_equal(got["prediction.4.weight"], initial["prediction.4.weight"])
    assert all(np.array_equal(got[n], pretrained[n]) for n in got if not n.startswith("prediction.4."))


def test_another_format_plugs_in_by_its_names(tmp_path, files, monkeypatch):
    net = tiny_net()
    load_weights(net, files["ckpt"], log=quiet)
    ms.save_checkpoint([{"name": f"zoo.{p.name}", "data": p} for p in net.get_parameters()],
                       str(tmp_path / "zoo.ckpt"))
    with pytest.raises(WeightsError, match="cannot tell whose weights"):
        load_weights(tiny_net(), tmp_path / "zoo.ckpt", log=quiet)
    monkeypatch.setattr("vig.weights.FORMATS", list(FORMATS))
    register_format(WeightFormat("zoo", lambda names: all(n.startswith("zoo.") for n in names),
                                 lambda names, model_names: lambda name: name[len("zoo."):]))
    assert detect_format(["zoo.pos_embed"]).name == "zoo"
    other = tiny_net()
    assert load_weights(other, tmp_path / "zoo.ckpt", log=quiet).format == "zoo"
    assert np.array_equal(values(other)["pos_embed"], values(net)["pos_embed"])


def test_the_weights_content_is_part_of_the_training_hash(tmp_path, files):
    (tmp_path / "m.yaml").write_text(TINY_YAML)
    plain = training_hash(load_model_config(tmp_path / "m.yaml"))
    copy = tmp_path / "copy.pth"
    copy.write_bytes(files["pth"].read_bytes())
    with_pth = training_hash(load_model_config(tmp_path / "m.yaml", {"pretrained": str(copy)}))
    assert with_pth != plain
    save_torch_file(copy, torch_state(seed=1))  # same path, other weights
    assert training_hash(load_model_config(tmp_path / "m.yaml", {"pretrained": str(copy)})) != with_pth


# ----------------------------------------------------------------------------------------------
# Through the CLIs
# ----------------------------------------------------------------------------------------------
def write_images(root: Path, classes=4, per_class=2, size=40, name="{i}.JPEG") -> Path:
    """An ImageNet-format folder of random images: train/ and val/, class folders c0, c1, ..."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name.format(i=i))
    return root


def run_script(name, *args, cwd):
    return subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True, text=True,
                          timeout=900, cwd=cwd, env={**os.environ, "GLOG_v": "3"})


def test_train_evaluate_and_export_take_either_format_through_pretrained(tmp_path, files):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    data = write_images(tmp_path / "data")
    runs = {}
    for kind, weights in (("pth", files["pth"]), ("ckpt", files["ckpt"])):
        out = tmp_path / kind
        train = run_script("train.py", "--vig_config", config, "--data_url", data, "--pretrained", weights,
                           "--output_ckpt", out / "w.ckpt", "--metrics", out / "m.jsonl", "--state_root",
                           out / "state", "--log_dir", out / "logs", cwd=tmp_path)
        assert train.returncode == 0, train.stderr[-2000:]
        assert "[pretrained] loaded" in train.stdout and str(weights) in train.stdout
        flag = "--pretrained" if kind == "pth" else "--checkpoint"  # the old name still works
        evaluate = run_script("evaluate.py", "--vig_config", config, flag, weights, "--data_url", data,
                              "--output", out / "eval.json", cwd=tmp_path)
        assert evaluate.returncode == 0, evaluate.stderr[-2000:]
        export = run_script("export.py", "--vig_config", config, flag, weights, "--output", out / "m.mindir",
                            "--no_check", cwd=tmp_path)
        assert export.returncode == 0, export.stderr[-2000:]
        assert (out / "m.mindir").stat().st_size > 0 and str(weights) in export.stdout
        runs[kind] = {"metrics": (out / "m.jsonl").read_text(), "eval": json.loads((out / "eval.json").read_text())}
    # the same starting weights: the same training run and the same evaluation, whichever file held them
    assert runs["pth"]["metrics"].split('"images/s"')[0] == runs["ckpt"]["metrics"].split('"images/s"')[0]
    for key in ("top1", "top5", "loss", "confusion_matrix"):
        assert runs["pth"]["eval"][key] == runs["ckpt"]["eval"][key]
    assert runs["pth"]["eval"]["weights_sha256"] != runs["ckpt"]["eval"]["weights_sha256"]


@pytest.mark.parametrize("damage, names", [
    ("shape", ["pos_embed: expected (1, 16, 4, 4), found (1, 16, 2, 2)"]),
    ("missing", ["missing (in the model, not in the checkpoint)", "stem.convs.0.weight (4, 3, 3, 3)"]),
])
def test_weights_that_do_not_fit_stop_training_before_the_data_pipeline(tmp_path, damage, names):
    state = torch_state()
    if damage == "shape":
        state["pos_embed"] = np.zeros((1, 16, 2, 2), np.float32)
    else:
        del state["stem.convs.0.weight"]
    bad = save_torch_file(tmp_path / "bad.pth", state)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    empty = tmp_path / "empty"  # any look at the data would fail differently: no class folders at all
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    result = run_script("train.py", "--vig_config", config, "--data_url", empty, "--pretrained", bad,
                        "--output_ckpt", tmp_path / "w.ckpt", "--state_root", tmp_path / "state", "--log_dir",
                        tmp_path / "logs", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "bad.pth (original PyTorch (vig_pytorch)) does not fit" in result.stderr
    for name in names:
        assert name in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "fewer images" not in result.stderr + result.stdout
    assert not (tmp_path / "w.ckpt").exists() and not (tmp_path / "state").exists()


# ----------------------------------------------------------------------------------------------
# Fine-tuning the demo's own weights
# ----------------------------------------------------------------------------------------------
def demo_subset(source: Path, target: Path, classes, train_per_class: int, val_per_class: int) -> Path:
    for split, limit in (("train", train_per_class), ("val", val_per_class)):
        for name in classes:
            (target / split / name).mkdir(parents=True)
            for image in sorted((source / split / name).iterdir())[:limit]:
                (target / split / name / image.name).write_bytes(image.read_bytes())
    return target


def train_demo(tmp_path, name, data, *args):
    out = tmp_path / name
    result = run_script("train.py", "--vig_config", REPO / "config" / "models" / "vig_demo.yaml", "--data_url", data,
                        "--set", "image_size=16", "--set", "batch_size=32", "--set", "warmup_length=0", *args,
                        "--output_ckpt", out / "w.ckpt", "--metrics", out / "m.jsonl", "--state_root",
                        out / "state", "--log_dir", out / "logs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "m.jsonl").read_text().splitlines()]
    return out / "w.ckpt", metrics, result.stdout


def test_fine_tuning_the_demo_weights_to_5_classes_beats_training_from_scratch(tmp_path):
    from vig.demo_data import build_demo_dataset

    build_demo_dataset(tmp_path / "digits", image_size=16)  # the demo's images, at 16x16 to stay fast
    # a few of its images per class keep the three trainings small
    ten = demo_subset(tmp_path / "digits", tmp_path / "ten", [str(d) for d in range(10)], 30, 6)
    five = demo_subset(tmp_path / "digits", tmp_path / "five", [str(d) for d in range(5)], 30, 12)
    demo_weights, _, _ = train_demo(tmp_path, "demo", ten, "--set", "epochs=4", "--set", "base_lr=0.002")
    _, tuned, log = train_demo(tmp_path, "tuned", five, "--set", "epochs=1", "--set", "num_classes=5",
                               "--pretrained", demo_weights)
    _, scratch, _ = train_demo(tmp_path, "scratch", five, "--set", "epochs=1", "--set", "num_classes=5")
    fine_tune = [line for line in log.splitlines() if "fine-tuning" in line]
    assert fine_tune == [f"[pretrained] fine-tuning: {demo_weights} has 10 classes, the network 5; the "
                         f"classifier's last layer (prediction.4) starts fresh"]
    assert tuned[-1]["val_top1"] > scratch[-1]["val_top1"], (tuned, scratch)
