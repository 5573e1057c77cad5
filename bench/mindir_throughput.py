"""Exported-MINDIR inference speed against in-framework evaluation, on CPU (issue 3: the MINDIR must be
at least as fast). Prints one JSON document on stdout; progress goes to stderr.

    .venv/bin/python bench/mindir_throughput.py                      # ViG-Ti, 224, batch 8
    .venv/bin/python bench/mindir_throughput.py --rounds 2 --output /tmp/mindir.json

Per model, a `prepare` subprocess saves the random-init weights (seed 0) to a temporary checkpoint and
exports them with vig/deploy/export.py (native ops, dynamic batch), as the workflow's export step does.
Then, alternating for `--rounds` rounds, each in a fresh subprocess on the same input batch:

- `eval`: the network built from the config with the compiled CPU kernels, the checkpoint loaded, eval
  mode, GRAPH_MODE - the forward of the evaluation step (vig/train/evaluate.py) without its loss/top-5;
- `eval_native`: the same with MindSpore's native ops only (`ops="native"`), i.e. the graph the MINDIR
  holds, run in the framework;
- `mindir`: `nn.GraphCell(mindspore.load(file))`, as vig/deploy/infer.py runs it.

Both set the CPU op threads as the deployment CLIs do (vig.runtime.set_cpu_threads). `step_s` is
the median over rounds of each round's median step (after `--warmup` untimed steps, the first of
which compiles: `compile_s`), `cpu_s` the process CPU seconds per step, `ratio` = mindir / eval step
time (target <= 1.0), `ratio_vs_native_eval` = mindir / eval_native (what the file and its loader cost).

So that the bench cannot time a broken graph, `max_abs_diff` compares the MINDIR's logits on the timed
batch with the same network's run in MindSpore with the same native ops (`prepare`); above
`--tolerance` x max(1, |logits|) the bench exits with an error. The eval side's compiled kernels are
not a tight reference: their kNN picks a different neighbour at near-ties (distances equal to ~1e-7),
and with random weights such a flip in a late block moves the logits visibly, so `max_abs_diff_vs_eval`
and `top1_agreement_vs_eval` are reported, not gated. The BatchNorm running statistics of the random
weights are calibrated on the batch first (see calibrate_batch_norm) so the logits are O(1).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vig.cli import Parser  # noqa: E402
from model_throughput import (REPO, check_positive, log, machine_info, median_time, print_result,  # noqa: E402
                              print_worker_result, run_subprocess, summarise)

WORKERS = ("prepare", "eval", "eval_native", "mindir")


def _model_cfg(model: str, image_size: int) -> dict:
    from vig.config import DEFAULTS

    return dict(DEFAULTS, arch=model, image_size=image_size, num_classes=1000, drop_path_rate=0.0,
                device_target="CPU")


def _set_device(jit_level: str | None) -> None:
    from vig.deploy.cli import set_device

    set_device({"device_target": "CPU"})  # GRAPH_MODE and one op thread per core, as the CLIs do
    if jit_level:
        import mindspore as ms

        ms.set_context(jit_config={"jit_level": jit_level})


def calibrate_batch_norm(net, images) -> None:
    """Set every BatchNorm's running statistics to its input's batch statistics (one PyNative pass).

    Random-init ViG with the default running stats (0, 1) normalises nothing: the activations grow
    block by block to logits of ~1e7, where 1e-6 relative rounding differences flip kNN neighbours and
    the eval/MINDIR comparison means nothing. Calibrated, the logits are O(1) like a trained model's."""
    import mindspore as ms
    from mindspore import nn

    def set_stats(cell, inputs):
        x = inputs[0].asnumpy()
        cell.moving_mean.set_data(ms.Tensor(x.mean((0, 2, 3)).astype("float32")))
        cell.moving_variance.set_data(ms.Tensor(x.var((0, 2, 3)).astype("float32")))

    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)  # the hooks need each BatchNorm's input as it runs
    handles = [c.register_forward_pre_hook(set_stats) for _, c in net.cells_and_names()
               if isinstance(c, nn.BatchNorm2d)]
    try:
        net.set_train(False)
        net(images)
    finally:
        for handle in handles:
            handle.remove()
        ms.set_context(mode=previous)


def run_worker(args) -> dict:
    os.environ.setdefault("GLOG_v", "3")
    sys.path.insert(0, str(REPO))
    import numpy as np
    import mindspore as ms

    _set_device(args.jit_level)
    cfg = _model_cfg(args.model, args.image_size)
    if args.worker == "prepare":
        import time

        from vig.config import build_model
        from vig.deploy.export import export_model
        from vig.weights import load_weights

        ms.set_seed(0)
        net = build_model(cfg)
        calibrate_batch_norm(net, ms.Tensor(np.load(args.images)))
        ms.save_checkpoint(net, args.checkpoint)
        start = time.perf_counter()
        # the parity check of the export (PyNative forwards) is skipped: this bench compares outputs itself
        export_model(cfg, args.checkpoint, args.mindir, check=False, log=log)
        export_s = time.perf_counter() - start
        # what the MINDIR must reproduce: the same network with the same (native) ops
        reference = build_model(cfg, ops="native")
        load_weights(reference, args.checkpoint, log=log)
        reference.set_train(False)
        np.save(args.logits, reference(ms.Tensor(np.load(args.images))).asnumpy())
        return {"export_s": export_s, "mindir_mb": os.path.getsize(args.mindir) / 1e6}

    images = ms.Tensor(np.load(args.images))
    if args.worker in ("eval", "eval_native"):
        from vig.config import build_model
        from vig.weights import load_weights

        # eval_native: the graph the MINDIR holds, run in the framework
        net = build_model(cfg, training=False, ops="native" if args.worker == "eval_native" else "auto")
        load_weights(net, args.checkpoint, log=log)
        net.set_train(False)
        step = net  # a Cell called in GRAPH_MODE compiles once, like _EvalForward in evaluate()
    else:
        from mindspore import nn

        step = nn.GraphCell(ms.load(args.mindir))
    outputs = []
    result = median_time(lambda: outputs.append(step(images).asnumpy()), args.warmup, args.repeats)
    np.save(args.logits, outputs[-1])
    result["batch"] = int(images.shape[0])
    result["img_per_s"] = result["batch"] / result["step_s"]
    return result


def worker_cmd(args, worker: str, model: str, files: dict) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", worker, "--model", model, "--image_size", str(args.image_size),
           "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--checkpoint", files["ckpt"],
           "--mindir", files["mindir"], "--images", files["images"], "--logits", files[f"{worker}_logits"]]
    return cmd + (["--jit_level", args.jit_level] if args.jit_level else [])


def drive(args) -> dict:
    import numpy as np

    result = {"machine": machine_info(), "batch": args.batch, "image_size": args.image_size,
              "jit_level": args.jit_level or "default", "results": []}
    with tempfile.TemporaryDirectory(prefix="vig-mindir-bench-") as tmp:
        images = os.path.join(tmp, "images.npy")
        rng = np.random.default_rng(0)
        np.save(images, rng.standard_normal((args.batch, 3, args.image_size, args.image_size), dtype=np.float32))
        for model in args.models:
            files = {"images": images, "ckpt": os.path.join(tmp, f"{model}.ckpt"),
                     "mindir": os.path.join(tmp, f"{model}.mindir")}
            files.update({f"{w}_logits": os.path.join(tmp, f"{model}.{w}.npy") for w in WORKERS})
            log(f"{model}: checkpoint + export")
            prep = run_subprocess(worker_cmd(args, "prepare", model, files))
            runs = {"eval": [], "eval_native": [], "mindir": []}
            for rnd in range(args.rounds):
                for worker in runs:
                    log(f"{model} {worker} (round {rnd + 1}/{args.rounds})")
                    runs[worker].append(run_subprocess(worker_cmd(args, worker, model, files)))
            logits = {w: np.load(files[f"{w}_logits"]) for w in WORKERS}
            got, native, evaluated = logits["mindir"], logits["prepare"], logits["eval"]
            diff = float(np.abs(got - native).max()) if got.shape == native.shape else float("inf")
            entry = {"model": model, "export_s": prep["export_s"], "mindir_mb": prep["mindir_mb"],
                     **{worker: summarise(timings) for worker, timings in runs.items()},
                     "max_abs_diff": diff, "logits_scale": float(np.abs(native).max())}
            if got.shape == evaluated.shape:
                entry["max_abs_diff_vs_eval"] = float(np.abs(got - evaluated).max())
                entry["top1_agreement_vs_eval"] = float((got.argmax(1) == evaluated.argmax(1)).mean())
            entry["ratio"] = entry["mindir"]["step_s"] / entry["eval"]["step_s"]
            entry["cpu_ratio"] = entry["mindir"]["cpu_s"] / entry["eval"]["cpu_s"]
            # the same comparison against the MINDIR's own (native-op) graph run in the framework: what the
            # file format and its loader cost, apart from the compiled kernels it cannot carry
            entry["ratio_vs_native_eval"] = entry["mindir"]["step_s"] / entry["eval_native"]["step_s"]
            log(f"{model}: " + json.dumps({k: entry.get(k) for k in ("ratio", "cpu_ratio", "ratio_vs_native_eval",
                                                                     "max_abs_diff",
                                                                     "max_abs_diff_vs_eval")}))
            result["results"].append(entry)
            if not diff <= args.tolerance * max(1.0, entry["logits_scale"]):
                print_result(result, None)  # what was measured, then the failure
                raise SystemExit(f"{model}: the MINDIR's logits differ from the same network's in MindSpore "
                                 f"(native ops) by {diff:.3g} (allowed {args.tolerance:g} x max(1, |logits|)): "
                                 f"the exported graph is broken")
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    return result


def parse_args(argv=None):
    p = Parser(description=__doc__)
    p.add_argument("--models", nargs="+", default=["vig_ti_224_gelu"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps, the first of which compiles")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per round (median)")
    p.add_argument("--rounds", type=int, default=1, help="alternating eval/MINDIR subprocess rounds")
    p.add_argument("--jit_level", choices=("O0", "O1", "O2"),
                   help="set_context jit_level in both workers (default: MindSpore's, as the CLIs run)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="max abs logit difference allowed, relative to max(1, |logits|) (the export check's)")
    p.add_argument("--output", help="also write the JSON here")
    # worker mode (internal)
    p.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    for name in ("--checkpoint", "--mindir", "--images", "--logits"):
        p.add_argument(name, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_positive(p, args, ("batch", "image_size", "warmup", "repeats", "rounds"))
    if not args.worker:
        sys.path.insert(0, str(REPO))
        from vig.models import list_models

        unknown = [m for m in args.models if m not in list_models()]
        if unknown:
            p.error(f"unknown model(s) {', '.join(unknown)}; valid: {', '.join(list_models())}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print_worker_result(run_worker(args), worker=args.worker, model=args.model)
        return
    print_result(drive(args), args.output)


if __name__ == "__main__":
    main()
