"""The patch-graph picture and graph health (vig/graph_view.py, workflow_scripts/plot_graph.py)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_ISOTROPIC, TINY_PYRAMID
from test_weights import write_images
from vig import graph_view as gv
from vig.models import create_model
from vig.models.graph import DilatedKnnGraph

REPO = Path(__file__).resolve().parent.parent


def forward_pass_neighbours(net, images, monkeypatch):
    """The indices every DilatedKnnGraph returns during one ordinary forward pass, in call order."""
    from mindspore import Tensor

    seen = []
    original = DilatedKnnGraph.construct

    def recording(self, *args):
        idx = original(self, *args)
        seen.append(idx.asnumpy())
        return idx

    monkeypatch.setattr(DilatedKnnGraph, "construct", recording)
    net(Tensor(images))
    monkeypatch.setattr(DilatedKnnGraph, "construct", original)
    return seen


@pytest.mark.parametrize("arch, overrides", [("vig_ti_224_gelu", TINY_ISOTROPIC),
                                             ("pvig_ti_224_gelu", TINY_PYRAMID)])
def test_traced_neighbours_are_the_forward_pass_knn(arch, overrides, pynative, monkeypatch):
    net = create_model(arch, num_classes=4, **overrides)
    net.set_train(False)
    images = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    graphs = gv.trace_graphs(net, images)
    forward = forward_pass_neighbours(net, images, monkeypatch)
    assert len(graphs) == len(forward) == len(net.graph_schedule())
    for graph, idx, planned in zip(graphs, forward, net.graph_schedule()):
        assert (graph["k"], graph["dilation"], graph["r"]) == (planned["k"], planned["dilation"], planned["r"])
        np.testing.assert_array_equal(graph["neighbours"], idx)
    if arch.startswith("pvig"):  # per stage: 16x16 keys pooled by 4, then 8x8 by 2, 4x4, 2x2
        assert [(g["stage"], g["grid"], g["r"]) for g in graphs] == [
            (0, (16, 16), 4), (1, (8, 8), 2), (2, (4, 4), 1), (2, (4, 4), 1), (3, (2, 2), 1)]
        assert [g["block"] for g in gv.drawn_blocks(graphs)] == [0, 1, 2, 3, 4]


def test_the_panel_draws_exactly_the_neighbours_of_each_centre_patch(pynative):
    """Filled squares in a centre patch's colour sit on its k neighbours (r x r nodes each), none elsewhere."""
    from matplotlib.colors import to_rgba

    from vig.report import _pyplot

    net = create_model("pvig_ti_224_gelu", num_classes=4, **TINY_PYRAMID)
    images = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    graph = gv.trace_graphs(net, images)[1]  # 8x8 nodes, keys pooled by 2
    nodes = gv.centre_nodes(graph["grid"])
    assert len(nodes) == 3
    fig, ax = _pyplot().subplots()
    gv._draw_panel(ax, np.zeros((64, 64, 3)), graph, 0, nodes)
    keys = gv.key_centres(graph["grid"], graph["r"])
    for node, colour in zip(nodes, gv.CENTRE_COLOURS):
        drawn = sorted((p.get_y() + 1.0, p.get_x() + 1.0) for p in ax.patches  # corner + 1 = centre for r=2
                       if p.get_fill() and np.allclose(p.get_facecolor()[:3], to_rgba(colour)[:3]))
        expected = sorted(tuple(keys[j] + 0.5) for j in graph["neighbours"][0, node])
        assert len(drawn) == graph["k"]
        np.testing.assert_allclose(drawn, expected)
    _pyplot().close(fig)


def test_neighbour_distance_on_a_known_graph():
    # a 1x4 row, each node linked to the next one to its left or right: one patch each
    row = np.array([[[1], [0], [3], [2]]])
    assert gv.mean_neighbour_distance(row, (1, 4)) == pytest.approx(1.0)
    # a 2x2 grid pooled by 2: one key at the centre, sqrt(0.5) patches from every node
    pooled = np.zeros((1, 4, 2), np.int64)
    assert gv.mean_neighbour_distance(pooled, (2, 2), r=2) == pytest.approx(np.sqrt(0.5))
    # 3x3, every node linked to the corner (0, 0): distances 0, 1, 2, 1, sqrt2, sqrt5, 2, sqrt5, sqrt8
    corner = np.zeros((1, 9, 1), np.int64)
    expected = np.mean([0, 1, 2, 1, np.sqrt(2), np.sqrt(5), 2, np.sqrt(5), np.sqrt(8)])
    assert gv.mean_neighbour_distance(corner, (3, 3)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="3x3 grid"):
        gv.mean_neighbour_distance(row, (3, 3))


def test_cosine_similarity_on_known_features():
    same = np.tile(np.array([1.0, 2.0, -1.0], np.float32)[None, :, None], (2, 1, 5))  # (B, C, N)
    assert gv.mean_cosine_similarity(same * np.arange(1, 6)) == pytest.approx(1.0)  # scale does not matter
    orthogonal = np.eye(4, dtype=np.float32)[None]
    assert gv.mean_cosine_similarity(orthogonal) == pytest.approx(0.0)
    opposite = np.array([[[1.0, -1.0], [0.0, 0.0]]], np.float32)  # two nodes, v and -v
    assert gv.mean_cosine_similarity(opposite) == pytest.approx(-1.0)
    # the mean over images: one image of identical nodes (1), one of orthogonal nodes (0)
    mixed = np.stack([np.ones((4, 4), np.float32), np.eye(4, dtype=np.float32)])
    assert gv.mean_cosine_similarity(mixed) == pytest.approx(0.5)


def test_default_images_are_the_first_of_the_first_four_classes(tmp_path):
    val = write_images(tmp_path, classes=5, size=24, name="img{i}.png") / "val"
    chosen = gv.select_images(str(val))
    assert [(Path(p).parent.name, Path(p).name, name) for p, name in chosen] == [
        (f"c{c}", "img0.png", f"c{c}") for c in range(4)]
    assert [name for _, name in gv.select_images(str(val), images=["c3/img1.png"])] == ["c3"]
    with pytest.raises(FileNotFoundError, match="c9/nope.png"):
        gv.select_images(str(val), images=["c9/nope.png"])


def test_cli_names_a_missing_image_before_building_the_model(tmp_path):
    data = write_images(tmp_path / "data", classes=5, size=24, name="img{i}.png")
    (tmp_path / "not_weights.ckpt").write_bytes(b"")  # loading it would fail: the image check must come first
    proc = subprocess.run(
        [sys.executable, str(REPO / "workflow_scripts" / "plot_graph.py"), "--vig_config",
         str(REPO / "config" / "models" / "vig_demo.yaml"), "--pretrained", str(tmp_path / "not_weights.ckpt"),
         "--data_url", str(data), "--images", "c0/missing.png", "--graph_png", str(tmp_path / "g.png"),
         "--health_png", str(tmp_path / "h.png"), "--health_json", str(tmp_path / "h.json")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "c0/missing.png" in proc.stderr and "relative to" in proc.stderr
    assert not list(tmp_path.glob("*.png"))


def test_plot_graph_is_in_the_default_dag(tmp_path):
    from test_workflow import planned_jobs, snakemake

    proc = snakemake(tmp_path, "-n", "-p", "--cores", "2")
    assert "plot_graph" in planned_jobs(proc.stdout)
    assert "--num_classes 4" in proc.stdout and "report/patch_graph.png" in proc.stdout
    chosen = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--config",
                       'plot_graph={"images": ["0/a b.png"]}').stdout
    assert "--images '0/a b.png'" in chosen
    seed_port = snakemake(tmp_path, "-n", "--cores", "2", "--config", 'train_overrides={"model_overrides": '
                          '{"channels": [24], "blocks": [2], "k": 3, "stem_stride": 4, "graph": "seed_port"}}').stdout
    assert "plot_graph" not in planned_jobs(seed_port) and "summary" in planned_jobs(seed_port)
