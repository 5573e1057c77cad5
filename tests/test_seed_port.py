"""The model-zoo port's graph (`model_overrides: {graph: seed_port}`) against the port's own code, and the
port's checkpoints through `--pretrained`.

The reference outputs in tests/data/seed_port/ were made by running the port's unmodified model code
(mindspore-ai/models research/cv/ViG; revision and MindSpore version in port_reference.json) with
tests/reference/seed_port.py; weights and inputs are regenerated here from the same seeds
(tests/helpers_seed_port.py), so only outputs are stored.
"""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from helpers_seed_port import (CHECKPOINT_NAMES_FILE, DATA_DIR, REFERENCE_FILE, TINY, VIG_S, seeded_features,
                               seeded_image, seeded_weights, summarise)

from vig.config import build_model, load_model_config
from vig.models import create_model, list_graphs
from vig.weights import WeightsError, load_weights, model_shapes

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / DATA_DIR
REFERENCE = dict(np.load(DATA / REFERENCE_FILE))
PORT_NAMES = json.loads((DATA / CHECKPOINT_NAMES_FILE).read_text())
SEED = 0
# neighbours per ViG-S block in the port: ceil(k_i / d_i) (vig_reference.md A.2)
VIG_S_NEIGHBOURS = [9, 9, 10, 10, 6, 6, 6, 7, 5, 5, 5, 5, 4, 4, 5, 5]


def port_graph(spec: dict, **extra):
    net = create_model(spec["arch"], graph="seed_port", **{**spec["ours"], **extra})
    for param in net.get_parameters():  # the seeded weights the port ran with, by the port's names
        param.set_data(ms.Tensor(seeded_weights({param.name: param.shape}, SEED)[param.name]))
    return net


def relative_error(actual, expected) -> float:
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected)))


def assert_matches_summary(actual: np.ndarray, prefix: str, tol: float = 1e-4) -> float:
    """Compare an output with the port's stored summary: sampled values and whole-tensor sums."""
    ours = summarise(actual)
    assert tuple(ours["shape"]) == tuple(REFERENCE[f"{prefix}/shape"]), prefix
    err = relative_error(ours["samples"], REFERENCE[f"{prefix}/samples"])
    assert err <= tol, f"{prefix}: sampled values differ by {err:.3g} of their range"
    for key in ("sum", "sumsq"):
        expected = REFERENCE[f"{prefix}/{key}"]
        scale = max(abs(float(expected)), float(REFERENCE[f"{prefix}/sumsq"]) ** 0.5)
        assert abs(float(ours[key]) - expected) <= tol * scale, f"{prefix}/{key}: {ours[key]} vs {expected}"
    return err


# ----------------------------------------------------------------------------------------------
# Same outputs as the port's code
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
def test_tiny_port_graph_gives_the_ports_logits_in_eval_and_train_mode(mode):
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        net = port_graph(TINY)
        image = ms.Tensor(seeded_image(TINY["batch"], SEED))
        net.set_train(False)
        assert relative_error(net(image).asnumpy(), REFERENCE["tiny/eval_logits"]) <= 1e-4
        if mode == ms.PYNATIVE_MODE:  # (one graph compile is enough to show the graph builds the same)
            net.set_train(True)  # BatchNorm on the batch's statistics, as the port trains
            assert relative_error(net(image).asnumpy(), REFERENCE["tiny/train_logits"]) <= 1e-4
    finally:
        ms.set_context(mode=previous)


@pytest.fixture(scope="module")
def vig_s():
    net = port_graph(VIG_S)
    net.set_train(False)
    return net


def test_vig_s_port_graph_matches_the_port_stage_by_stage(vig_s, pynative):
    dim, batch = 320, VIG_S["batch"]
    assert [b["neighbours"] for b in vig_s.graph_schedule()] == VIG_S_NEIGHBOURS
    stem = vig_s.patch_embed(ms.Tensor(seeded_image(1, SEED))) + vig_s.pos_embed
    errors = {"stem": assert_matches_summary(stem.asnumpy(), "vig_s/stem")}
    for i, block in enumerate(vig_s.blocks):
        out = block(ms.Tensor(seeded_features(dim, batch, SEED, f"block{i:02d}")))
        errors[i] = assert_matches_summary(out.asnumpy(), f"vig_s/block{i:02d}")
    logits = vig_s.forward_head(ms.Tensor(seeded_features(dim, batch, SEED, "head"))).asnumpy()
    errors["head"] = assert_matches_summary(logits, "vig_s/head")
    print("\nmax relative difference per stage:", {k: f"{v:.2g}" for k, v in errors.items()})
    # End to end on the seeded image, reported only: a random-weight ViG-S is chaotic, so a last-bit
    # difference early on (another CPU's kernels) could flip a neighbour later without any bug.
    chain, x = [], stem
    for i, block in enumerate(vig_s.blocks):
        x = block(x)
        expected = REFERENCE[f"vig_s/chain_block{i:02d}/samples"]
        chain.append(relative_error(summarise(x.asnumpy())["samples"], expected))
    end = relative_error(vig_s.forward_head(x).asnumpy(), REFERENCE["vig_s/chain_logits"])
    print(f"end to end: max relative difference per block {max(chain):.2g}, logits {end:.2g}")


def test_exact_gelu_would_not_pass(pynative):
    """The tolerance separates the graphs: the same network with the original's exact GELU misses."""
    net = port_graph(TINY)
    for _, cell in net.cells_and_names():
        if isinstance(cell, ms.nn.SequentialCell):
            for i, item in enumerate(cell):
                if isinstance(item, ms.nn.GELU):
                    cell[i] = ms.nn.GELU(approximate=False)
    net.set_train(False)
    logits = net(ms.Tensor(seeded_image(TINY["batch"], SEED))).asnumpy()
    assert relative_error(logits, REFERENCE["tiny/eval_logits"]) > 1e-3


def test_port_graph_refuses_what_the_port_does_not_have():
    with pytest.raises(ValueError, match="isotropic"):
        create_model("pvig_ti_224_gelu", graph="seed_port")
    with pytest.raises(ValueError, match="conv='mr'"):
        create_model("vig_ti_224_gelu", graph="seed_port", conv="edge", **TINY["ours"])
    with pytest.raises(ValueError, match="expected one of original, seed_port"):
        create_model("vig_ti_224_gelu", graph="seedport")
    assert list_graphs() == ["original", "seed_port"]


# ----------------------------------------------------------------------------------------------
# The port's checkpoints
# ----------------------------------------------------------------------------------------------
BOOKKEEPING = {name: spec for name, spec in PORT_NAMES.items() if "." not in name}  # global_step, scale_sense...


def port_checkpoint_entries(net, prefix: str = "model.", moments: bool = True) -> dict:
    """name -> array of a checkpoint as the port's train.py writes it for `net` (its NetWithLoss prefixes
    `model.`, AdamWeightDecay adds adam_m/adam_v per trainable weight, then loss-scale and step entries)."""
    entries = {prefix + p.name: p.asnumpy() for p in net.get_parameters()}
    if moments:
        for p in net.trainable_params():
            for moment in ("adam_m.", "adam_v."):
                entries[moment + prefix + p.name] = np.full(p.shape, 0.5, np.float32)
        entries.update({name: np.ones(spec["shape"], spec["dtype"]) for name, spec in BOOKKEEPING.items()})
    return entries


def save_entries(entries: dict, path: Path) -> Path:
    ms.save_checkpoint([{"name": name, "data": ms.Tensor(value)} for name, value in entries.items()], str(path))
    return path


def test_the_checkpoint_layout_is_the_ports():
    """What port_checkpoint_entries writes is what the port's training wrapper saved (recorded names)."""
    entries = port_checkpoint_entries(port_graph(TINY))
    assert {n: {"shape": list(v.shape), "dtype": v.dtype.name} for n, v in entries.items()} == PORT_NAMES


@pytest.mark.parametrize("layout", ["train.py", "bare"])
def test_a_port_checkpoint_loads_onto_the_port_graph_and_gives_the_ports_logits(tmp_path, layout, pynative):
    entries = port_checkpoint_entries(port_graph(TINY), *(("model.", True) if layout == "train.py" else ("", False)))
    path = save_entries(entries, tmp_path / "vig_tiny0-1_1.ckpt")
    net = create_model(TINY["arch"], graph="seed_port", **TINY["ours"])  # fresh weights
    lines = []
    report = load_weights(net, path, log=lines.append)
    assert report.format.startswith("model-zoo port") and report.loaded == len(model_shapes(net))
    if layout == "train.py":  # the optimizer moments and the bookkeeping are skipped, and the log says so
        assert report.dropped == 2 * len(net.trainable_params()) + len(BOOKKEEPING)
        assert f"adam_m.* x{len(net.trainable_params())}" in lines[0] and "global_step" in lines[0]
    net.set_train(False)
    logits = net(ms.Tensor(seeded_image(TINY["batch"], SEED))).asnumpy()
    assert relative_error(logits, REFERENCE["tiny/eval_logits"]) <= 1e-4


def test_a_port_checkpoint_on_the_original_graph_names_the_option(tmp_path):
    path = save_entries(port_checkpoint_entries(port_graph(TINY)), tmp_path / "port.ckpt")
    with pytest.raises(WeightsError, match=r"model_overrides: \{graph: seed_port\}"):
        load_weights(create_model(TINY["arch"], **TINY["ours"]), path, log=lambda _: None)


def test_fine_tuning_from_a_port_checkpoint_starts_only_its_classifier_fresh(tmp_path):
    path = save_entries(port_checkpoint_entries(port_graph(TINY)), tmp_path / "port.ckpt")  # 10 classes
    net = create_model(TINY["arch"], graph="seed_port", **{**TINY["ours"], "num_classes": 4})
    before = {p.name: p.asnumpy() for p in net.get_parameters()}
    lines = []
    report = load_weights(net, path, allow_new_head=True, log=lines.append)
    assert set(report.fresh) == {"head.3.weight", "head.3.bias"} and "starts fresh" in lines[-1]
    after = {p.name: p.asnumpy() for p in net.get_parameters()}
    expected = seeded_weights({n: v.shape for n, v in after.items() if not n.startswith("head.3.")}, SEED)
    assert all(np.array_equal(after[n], v) for n, v in expected.items())  # head.0/head.1 too (the port drops them)
    assert all(np.array_equal(after[n], before[n]) for n in report.fresh)


EVAL_YAML = """\
arch: vig_ti_patch16_224
model_overrides: {graph: seed_port, channels: [16], blocks: [2], k: 3, stem_stride: 8}
image_size: 32
num_classes: 4
crop_pct: 1.0
batch_size: 4
amp_level: O0
num_parallel_workers: 1
device_target: CPU
"""


def test_a_port_checkpoint_evaluates_through_pretrained(tmp_path, pynative):
    from test_weights import run_script, write_images

    from vig.data import build_eval_dataset
    from vig.train.evaluate import evaluate

    config = tmp_path / "port.yaml"
    config.write_text(EVAL_YAML)
    cfg = load_model_config(config)
    net = build_model(cfg)
    for param in net.get_parameters():
        param.set_data(ms.Tensor(seeded_weights({param.name: param.shape}, 7)[param.name]))
    ckpt = save_entries(port_checkpoint_entries(net), tmp_path / "vig_s_patch16_2240-300_1251.ckpt")
    data = write_images(tmp_path / "data")
    run = run_script("evaluate.py", "--vig_config", config, "--pretrained", ckpt, "--data_url", data,
                     "--output", tmp_path / "eval.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"loaded {len(model_shapes(net))} tensors" in run.stdout and "model-zoo port" in run.stdout
    assert "non-weight entries ignored (adam_m.*" in run.stdout
    report = json.loads((tmp_path / "eval.json").read_text())
    # the CLI evaluated exactly these weights on the port's graph: the same loss as this process gets
    expected = evaluate(net, build_eval_dataset(str(data), cfg, 4, 0, 1, split="val"), 4, 4, False, log=lambda _: None)
    assert report["num_images"] == 8
    assert report["loss"] == pytest.approx(expected["loss"], rel=1e-5) and report["top1"] == expected["top1"]


def test_every_trainable_port_parameter_gets_a_gradient(graph_mode):
    """The port's graph trains (fine-tuning a port checkpoint) in Graph mode, the workflow's default,
    dilation and drop-path included."""
    net = create_model("vig_ti_patch16_224", graph="seed_port", num_classes=4, drop_path_rate=0.1,
                       channels=(16,), blocks=(5,), k=2, image_size=32, stem_stride=8)
    assert [b["dilation"] for b in net.graph_schedule()] == [1, 1, 1, 1, 2]
    net.set_train(True)
    loss_fn = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    x = ms.Tensor(np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32))
    y = ms.Tensor(np.arange(4, dtype=np.int32))
    loss, grads = ms.value_and_grad(ms.nn.WithLossCell(net, loss_fn), None, net.trainable_params())(x, y)
    assert np.isfinite(loss.asnumpy())
    dead = [p.name for p, g in zip(net.trainable_params(), grads)
            if not np.isfinite(g.asnumpy()).all() or not np.abs(g.asnumpy()).max() > 0]
    assert not dead, dead
