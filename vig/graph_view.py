"""The patch graph a trained ViG builds (the paper's Fig. 4) and its health, per block.

`trace_graphs` runs the model block by block and keeps, for every Grapher, the neighbour indices its
forward pass uses (DyGraphConv.neighbours: the same kNN cell, k, dilation, distance and relative
position) and the node features they rank. `graph_health` turns them into two numbers per block: the
mean spatial distance between a node and its neighbours (in patches of that stage) and the mean cosine
similarity between node features (a smoothing signal). The plots write PNGs atomically (Agg backend).
"""
from __future__ import annotations

import os

import numpy as np

from .io import atomic_path

DEFAULT_NUM_CLASSES = 4


# ----------------------------------------------------------------------------------------------
# Which images
# ----------------------------------------------------------------------------------------------
def select_images(split_dir, num_classes: int = DEFAULT_NUM_CLASSES, images=None) -> list[tuple[str, str]]:
    """(path, class name) pairs: the given `images` (paths relative to `split_dir`, whose first folder is
    the class) or the first image of each of the first `num_classes` classes."""
    from .data import list_images

    if images:
        chosen = []
        for rel in images:
            path = os.path.join(split_dir, rel)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"plot_graph image {rel!r}: {path} does not exist "
                                        f"(expected a path relative to {split_dir}, e.g. <class>/<file>)")
            chosen.append((path, os.path.normpath(rel).split(os.sep)[0]))
        return chosen
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}: expected at least 1 class to draw")
    names, paths, labels = list_images(split_dir)
    first = {}
    for path, label in zip(paths, labels):
        first.setdefault(int(label), path)
    return [(first[label], names[label]) for label in sorted(first)[:num_classes]]


def load_inputs(pairs, cfg: dict) -> np.ndarray:
    """The selected images through THE evaluation transform: (B, 3, S, S) float32."""
    from .data.settings import data_config
    from .data.transforms import eval_transforms, load_rgb

    dcfg = data_config(cfg)
    transform = eval_transforms(dcfg["image_size"], dcfg["crop_pct"], dcfg["mean"], dcfg["std"],
                                dcfg["interpolation"])
    return np.stack([transform(load_rgb(path)) for path, _ in pairs]).astype(np.float32)


def displayable(images: np.ndarray, mean, std) -> np.ndarray:
    """Undo the normalisation: (B, S, S, 3) in [0, 1], what the model saw."""
    out = images * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    return np.clip(out.transpose(0, 2, 3, 1), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# The graphs of a forward pass
# ----------------------------------------------------------------------------------------------
def trace_graphs(net, images: np.ndarray) -> list[dict]:
    """Run `net` (an eval-mode ViG) on `images` block by block. Per Grapher block: block and stage
    index, node grid (h, w), reduce ratio r, k, dilation, "neighbours" (B, h*w, k) int key indices and
    "features" (B, C, h*w) float32, the nodes the kNN ranks (after the Grapher's fc1)."""
    from mindspore import Tensor

    from .models.vig import Block, Downsample

    if not hasattr(net, "backbone") or not hasattr(net, "stem"):
        raise ValueError(f"{type(net).__name__}: only the original graph (model_overrides graph: original) is "
                         f"traced; the seed port's graph keeps its kNN inside its layers")
    net.set_train(False)
    x = net.stem(Tensor(images)) + net.pos_embed
    graphs, stage = [], 0
    for cell in net.backbone.cell_list:
        if isinstance(cell, Downsample):
            stage += 1
        elif isinstance(cell, Block):
            grapher = cell[0]
            conv = grapher.graph_conv
            idx, nodes, _ = conv.neighbours(grapher.fc1(x), grapher.relative_pos)
            graphs.append({"block": len(graphs), "stage": stage, "grid": (int(x.shape[2]), int(x.shape[3])),
                           "r": conv.r, "k": conv.knn.k, "dilation": conv.knn.dilation,
                           "neighbours": idx.asnumpy().astype(np.int64),
                           "features": nodes.asnumpy()[..., 0].astype(np.float32)})
        x = cell(x)
    if not graphs:
        raise ValueError(f"{type(net).__name__} has no graph blocks to trace")
    return graphs


def key_centres(grid, r: int) -> np.ndarray:
    """(M, 2) row, column of every key in node units: key j of an r-pooled grid covers r x r nodes."""
    h, w = grid
    rows, cols = np.meshgrid(np.arange(h // r), np.arange(w // r), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1) * r + (r - 1) / 2.0


def mean_neighbour_distance(neighbours: np.ndarray, grid, r: int = 1) -> float:
    """Mean Euclidean distance, in patches, between each node and each of its neighbours' centres."""
    h, w = grid
    nodes = key_centres(grid, 1)  # (h*w, 2)
    if neighbours.shape[-2] != h * w:
        raise ValueError(f"neighbours cover {neighbours.shape[-2]} nodes, expected {h * w} for a {h}x{w} grid")
    keys = key_centres(grid, r)[neighbours]  # (B, N, k, 2)
    return float(np.linalg.norm(keys - nodes[None, :, None, :], axis=-1).mean())


def mean_cosine_similarity(features: np.ndarray) -> float:
    """Mean cosine similarity over all pairs of distinct nodes, averaged over images; (B, C, N) input.
    1 means every node carries the same direction (over-smoothed), ~0 unrelated nodes."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    gram = np.einsum("bcn,bcm->bnm", unit, unit)
    n = gram.shape[-1]
    if n < 2:
        return float("nan")
    off_diagonal = (gram.sum(axis=(1, 2)) - np.trace(gram, axis1=1, axis2=2)) / (n * (n - 1))
    return float(off_diagonal.mean())


def graph_health(graphs: list[dict]) -> list[dict]:
    """Per block: block, stage, grid, k, dilation, r, mean_neighbour_distance, mean_cosine_similarity."""
    return [{"block": g["block"], "stage": g["stage"], "grid": list(g["grid"]), "k": g["k"],
             "dilation": g["dilation"], "r": g["r"],
             "mean_neighbour_distance": mean_neighbour_distance(g["neighbours"], g["grid"], g["r"]),
             "mean_cosine_similarity": mean_cosine_similarity(g["features"])} for g in graphs]


# ----------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------
def drawn_blocks(graphs: list[dict]) -> list[dict]:
    """The shallow and the deep block of every stage (one per stage when it has a single block)."""
    chosen = []
    for stage in sorted({g["stage"] for g in graphs}):
        blocks = [g for g in graphs if g["stage"] == stage]
        chosen += [blocks[0]] + ([blocks[-1]] if len(blocks) > 1 else [])
    return chosen


def centre_nodes(grid, count: int = 3) -> list[int]:
    """Up to `count` distinct nodes around the centre: the centre, upper-left and lower-right of it."""
    h, w = grid
    spots = [(h // 2, w // 2), (h // 4, w // 4), ((3 * h) // 4, (3 * w) // 4)]
    nodes = []
    for row, col in spots:
        node = int(row * w + col)
        if node not in nodes:
            nodes.append(node)
    return nodes[:count]


CENTRE_COLOURS = ("tab:red", "tab:cyan", "tab:orange")


def _draw_panel(ax, image, graph, index, nodes):
    from matplotlib.patches import Rectangle

    h, w = graph["grid"]
    r = graph["r"]
    ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest")
    faint = 0.5 if max(h, w) <= 16 else 0.25  # a 56x56 grid at full strength would hide the image
    for line in range(1, max(h, w)):  # the patch grid
        if line < w:
            ax.axvline(line, color="white", lw=0.4, alpha=faint)
        if line < h:
            ax.axhline(line, color="white", lw=0.4, alpha=faint)
    keys = key_centres((h, w), r)
    for node, colour in zip(nodes, CENTRE_COLOURS):
        row, col = divmod(node, w)
        for key in graph["neighbours"][index, node]:
            krow, kcol = keys[key]
            ax.add_patch(Rectangle((kcol - (r - 1) / 2.0, krow - (r - 1) / 2.0), r, r, facecolor=colour,
                                   alpha=0.35, edgecolor=colour, lw=1.0))
            ax.plot([col + 0.5, kcol + 0.5], [row + 0.5, krow + 0.5], color=colour, lw=0.8, alpha=0.8)
        ax.add_patch(Rectangle((col, row), 1, 1, fill=False, edgecolor=colour, lw=2.5))
        ax.plot(col + 0.5, row + 0.5, marker="*", color=colour, markersize=9, markeredgecolor="black", mew=0.5)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_patch_graph(images: np.ndarray, labels, graphs: list[dict], output):
    """One row per image, one column per drawn block: the image under its patch grid, 2-3 centre
    patches (outlined, starred) and their k neighbours (filled, same colour, joined by lines)."""
    from .report import _pyplot, _save

    columns = drawn_blocks(graphs)
    plt = _pyplot()
    fig, axes = plt.subplots(len(images), len(columns), figsize=(2.6 * len(columns), 2.6 * len(images)),
                             squeeze=False)
    for i, image in enumerate(images):
        for j, graph in enumerate(columns):
            ax = axes[i, j]
            _draw_panel(ax, image, graph, i, centre_nodes(graph["grid"]))
            if i == 0:
                h, w = graph["grid"]
                stage = f"stage {graph['stage'] + 1}, " if len({g['stage'] for g in graphs}) > 1 else ""
                ax.set_title(f"{stage}block {graph['block'] + 1}\n{h}x{w} patches, k={graph['k']}, "
                             f"d={graph['dilation']}" + (f", r={graph['r']}" if graph["r"] > 1 else ""),
                             fontsize=9)
            if j == 0:
                ax.set_ylabel(f"class {labels[i]}", fontsize=9)
    fig.suptitle("patch graph: neighbours of centre patches (the model's own kNN)", fontsize=10)
    return _save(fig, output)


def plot_graph_health(health: list[dict], output):
    """Mean neighbour distance (patches) and mean node cosine similarity against block depth."""
    from .report import _pyplot, _save

    plt = _pyplot()
    depth = [h["block"] + 1 for h in health]
    fig, (ax_d, ax_c) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_d.plot(depth, [h["mean_neighbour_distance"] for h in health], marker="o")
    ax_d.set(title="mean node-neighbour distance", xlabel="block", ylabel="patches (of the block's stage)")
    ax_c.plot(depth, [h["mean_cosine_similarity"] for h in health], marker="o", color="tab:green")
    ax_c.set(title="mean cosine similarity of node features", xlabel="block", ylim=(min(0.0, ax_c.get_ylim()[0]), 1.02))
    for stage_start in [h["block"] + 1 for h, prev in zip(health[1:], health) if h["stage"] != prev["stage"]]:
        for ax in (ax_d, ax_c):
            ax.axvline(stage_start - 0.5, color="grey", ls=":", lw=1)
    for ax in (ax_d, ax_c):
        ax.grid(alpha=0.3)
        ax.set_xticks(depth)
    return _save(fig, output)


def write_graph_view(cfg: dict, checkpoint, split_dir, graph_png, health_png, health_json,
                     num_classes: int = DEFAULT_NUM_CLASSES, images=None, log=print) -> list[dict]:
    """Select, load and trace the images under the trained weights; write the three outputs."""
    from .config import build_model
    from .io import write_json
    from .weights import load_weights

    pairs = select_images(split_dir, num_classes, images)  # a bad path fails before the model is built
    net = build_model(cfg, training=False)
    load_weights(net, checkpoint, tag="[plot_graph]", target=cfg["arch"])
    inputs = load_inputs(pairs, cfg)
    log(f"[plot_graph] tracing {len(pairs)} images: {', '.join(os.path.relpath(p, split_dir) for p, _ in pairs)}")
    graphs = trace_graphs(net, inputs)
    health = graph_health(graphs)
    for row in health:
        log(f"[plot_graph] block {row['block'] + 1} (stage {row['stage'] + 1}, k={row['k']}, d={row['dilation']}): "
            f"neighbour distance {row['mean_neighbour_distance']:.2f} patches, "
            f"node cosine {row['mean_cosine_similarity']:.3f}")
    from .data.settings import data_config

    dcfg = data_config(cfg)
    mean, std = dcfg["mean"], dcfg["std"]
    plot_patch_graph(displayable(inputs, mean, std), [name for _, name in pairs], graphs, graph_png)
    plot_graph_health(health, health_png)
    write_json(health_json, {"checkpoint": str(checkpoint),
                             "images": [os.path.relpath(p, split_dir) for p, _ in pairs], "blocks": health})
    return health
