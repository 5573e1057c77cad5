#!/usr/bin/env python
"""Regenerate tests/data/seed_port/ by running the model-zoo port's OWN model code (not ours).

    python tests/reference/seed_port.py --port_dir /path/to/models/research/cv/ViG [--port_revision COMMIT]
    python tests/reference/seed_port.py --port_dir /path/to/models/research/cv/ViG --check   # compares only

--port_dir is a checkout of mindspore-ai/models' research/cv/ViG (it must contain src/models/vig);
nothing of it is copied here. It runs on CPU with the installed MindSpore, in PyNative mode (the port's
default, graph_mode 1) and again in Graph mode, and writes:

- port_reference.npz: with the seeded weights of tests/helpers_seed_port.py loaded into the port's ViG,
  - tiny/{eval,train}_logits: the tiny config (dim 32, depth 6, k 3, 10 classes) on a seeded 2x3x224x224
    batch, in eval mode and in train mode (BatchNorm on batch statistics);
  - vig_s/stem, vig_s/block00..15, vig_s/head: ViG-S stage by stage, each stage fed its own seeded input
    (stem: a seeded image; block i and the head: a seeded N(0,1) 2x320x14x14 map), so one stage's
    rounding cannot cascade into the next (a random ViG-S is chaotic end to end); per output the values at
    fixed positions and the whole tensor's sum and sum of squares (helpers_seed_port.summarise);
  - vig_s/chain_*: the same ViG-S end to end on the seeded image (for reporting, not a gate);
- port_checkpoint_names.json: name -> shape and dtype of every entry of a checkpoint the port's training wrapper
  writes for the tiny config (NetWithLoss `model.`, AdamWeightDecay moments, loss-scale and step
  bookkeeping), saved as its ModelCheckpoint does (save_checkpoint of the train cell + epoch_num/step_num);
- port_reference.json: where the data came from and the PyNative-vs-Graph differences of the port itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS.parent)]
from helpers_seed_port import (CHECKPOINT_NAMES_FILE, DATA_DIR, META_FILE, REFERENCE_FILE, TINY,  # noqa: E402
                               VIG_S, seeded_features, seeded_image, seeded_weights, summarise)
from vig.io import atomic_path, write_json  # noqa: E402


def import_port(port_dir: Path):
    if not (port_dir / "src" / "models" / "vig" / "vig.py").is_file():
        raise SystemExit(f"--port_dir {port_dir}: no src/models/vig/vig.py there; pass the port's research/cv/ViG")
    sys.path.insert(0, str(port_dir))
    from src.models.vig import vig as port_vig  # noqa: E402  (the port's own code)

    return port_vig


def build(port_vig, spec: dict, seed: int):
    import mindspore as ms

    np.random.seed(seed)  # the port's init_weights draws from numpy's global generator
    net = port_vig.ViG(**spec["port"])
    weights = seeded_weights({p.name: p.shape for p in net.get_parameters()}, seed)
    for param in net.get_parameters():
        param.set_data(ms.Tensor(weights[param.name]))
    return net


def run(cell, *arrays):
    import mindspore as ms

    return cell(*[ms.Tensor(a) for a in arrays]).asnumpy()


def tiny_outputs(port_vig, seed: int) -> dict:
    net = build(port_vig, TINY, seed)
    image = seeded_image(TINY["batch"], seed)
    net.set_train(False)
    out = {"tiny/eval_logits": run(net, image)}
    net.set_train(True)
    out["tiny/train_logits"] = run(net, image)
    return out


def vig_s_outputs(port_vig, seed: int, log) -> dict:
    import mindspore as ms
    from mindspore import ops

    net = build(port_vig, VIG_S, seed)
    net.set_train(False)
    dim, batch = VIG_S["port"]["dim"], VIG_S["batch"]
    stages = {"stem": None}
    image = seeded_image(1, seed)
    pos = net.pos_embed.asnumpy()
    stages["stem"] = run(net.patch_embed, image) + pos
    for i, block in enumerate(net.blocks):
        stages[f"block{i:02d}"] = run(block, seeded_features(dim, batch, seed, f"block{i:02d}"))
        log(f"block {i} done")
    head_in = ms.Tensor(seeded_features(dim, batch, seed, "head"))
    stages["head"] = net.head(ops.ReduceMean(True)(head_in, (2, 3))).squeeze(-1).squeeze(-1).asnumpy()
    out = {}
    for name, value in stages.items():
        for key, item in summarise(value).items():
            out[f"vig_s/{name}/{key}"] = item
    chain = ms.Tensor(image)
    chain = net.patch_embed(chain) + net.pos_embed
    for i, block in enumerate(net.blocks):
        chain = block(chain)
        for key, item in summarise(chain.asnumpy()).items():
            out[f"vig_s/chain_block{i:02d}/{key}"] = item
    out["vig_s/chain_logits"] = run(net, image)
    return out


def checkpoint_names(port_dir: Path, port_vig, seed: int) -> dict:
    """name -> {shape, dtype} of what the port's train.py checkpoints for the tiny config."""
    import mindspore as ms
    from mindspore import nn
    from src.tools.criterion import NetWithLoss, SoftTargetCrossEntropy
    from src.tools.optimizer import get_param_groups
    from src.trainers import TrainClipGrad

    net = build(port_vig, TINY, seed)
    net_with_loss = NetWithLoss(net, SoftTargetCrossEntropy())
    optimizer = nn.AdamWeightDecay(get_param_groups(net), learning_rate=1e-3, weight_decay=0.05)  # get_optimizer's
    scale = nn.wrap.loss_scale.DynamicLossScaleUpdateCell(loss_scale_value=2 ** 24, scale_factor=2, scale_window=2000)
    train = TrainClipGrad(net_with_loss, optimizer, scale_sense=scale, clip_global_norm_value=5.0, use_global_norm=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vig0-1_1.ckpt")
        ms.save_checkpoint(train, path, append_dict={"epoch_num": 1, "step_num": 1})
        return {name: {"shape": list(value.shape), "dtype": value.asnumpy().dtype.name}
                for name, value in ms.load_checkpoint(path).items()}


def outputs_in_mode(port_dir: Path, mode: str, seed: int, out_npz: Path) -> None:
    """One MindSpore mode per process (the context is process-wide)."""
    import mindspore as ms

    ms.set_context(mode=ms.PYNATIVE_MODE if mode == "pynative" else ms.GRAPH_MODE, device_target="CPU")
    port_vig = import_port(port_dir)
    start = time.time()
    out = tiny_outputs(port_vig, seed)
    out.update(vig_s_outputs(port_vig, seed, lambda msg: print(f"[{mode}] {msg} {time.time() - start:.1f}s",
                                                               flush=True)))
    np.savez(out_npz, **out)


def check(output_dir: Path, reference: dict, names: dict) -> int:
    with np.load(output_dir / REFERENCE_FILE) as data:
        stored = dict(data)
    differ = sorted(k for k in set(stored) | set(reference)
                    if k not in stored or k not in reference or not np.array_equal(stored[k], reference[k]))
    stored_names = json.loads((output_dir / CHECKPOINT_NAMES_FILE).read_text())
    if stored_names != names:
        differ.append(CHECKPOINT_NAMES_FILE)
    print(f"check: {len(differ)} of {len(reference) + 1} entries differ" + (f": {differ[:10]}" if differ else ""))
    return 1 if differ else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port_dir", required=True, type=Path, help="the port's research/cv/ViG folder")
    parser.add_argument("--port_revision", default=None, help="its commit (default: git rev-parse in --port_dir)")
    parser.add_argument("--output_dir", type=Path, default=TESTS / "data" / DATA_DIR)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 unless the port's outputs and checkpoint names equal the stored ones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--_mode", choices=["pynative", "graph"], help=argparse.SUPPRESS)
    parser.add_argument("--_out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    port_dir = args.port_dir.resolve()
    if args._mode:
        outputs_in_mode(port_dir, args._mode, args.seed, args._out)
        return 0
    import_port(port_dir)  # fails early on a wrong path
    revision = args.port_revision or subprocess.run(["git", "-C", str(port_dir), "rev-parse", "HEAD"],
                                                    capture_output=True, text=True).stdout.strip() or "unknown"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("pynative", "graph"):
            out = Path(tmp) / f"{mode}.npz"
            subprocess.run([sys.executable, __file__, "--port_dir", str(port_dir), "--seed", str(args.seed),
                            "--_mode", mode, "--_out", str(out)], check=True)
            with np.load(out) as data:
                results[mode] = dict(data)
    reference, graph = results["pynative"], results["graph"]
    mode_diff = {key: float(np.max(np.abs(reference[key] - graph[key]) / (np.abs(reference[key]) + 1e-6)))
                 for key in reference if key.endswith(("logits", "samples"))}

    import mindspore as ms

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    names = checkpoint_names(port_dir, import_port(port_dir), args.seed)
    import mindspore

    meta = {"source": "mindspore-ai/models research/cv/ViG src/models/vig (the model-zoo port), run unmodified",
            "port_revision": revision, "mindspore": mindspore.__version__, "numpy": np.__version__,
            "device": "CPU", "reference_mode": "PyNative (the port's default graph_mode 1)", "seed": args.seed,
            "command": "python tests/reference/seed_port.py --port_dir <research/cv/ViG> --port_revision "
                       + revision,
            "graph_vs_pynative_max_relative_difference": mode_diff}
    if args.check:
        return check(args.output_dir, reference, names)
    with atomic_path(args.output_dir / REFERENCE_FILE) as tmp:
        np.savez_compressed(tmp, **reference)
    write_json(args.output_dir / CHECKPOINT_NAMES_FILE, dict(sorted(names.items())))
    write_json(args.output_dir / META_FILE, meta)
    print(f"wrote {args.output_dir}: {len(reference)} arrays, {len(names)} checkpoint names; "
          f"Graph vs PyNative max relative difference {max(mode_diff.values()):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
