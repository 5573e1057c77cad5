"""ViG training/inference throughput on CPU, optionally side by side with the original PyTorch code.

Prints one JSON document on stdout (progress goes to stderr). Every (model, case) runs in a fresh
subprocess so its peak RSS is its own; timings are the median of `--repeats` steps after `--warmup`
steps (the first call, which compiles the graph, is reported separately as compile_s).

    .venv/bin/python bench/model_throughput.py                         # ViG-Ti and ViG-S, batch 8, 224
    .venv/bin/python bench/model_throughput.py --models vig_ti_224_gelu \\
        --original /work/orig/vig_pytorch --torch_python /work/torchvenv/bin/python  # + ratio vs original

Cases: `infer` (forward, eval mode), `train` (forward, cross-entropy, backward, AdamW step) and `knn`
(the kNN graph step alone - normalise, distance, top-k, dilation - for every block, on random features
of the block's shape). With `--original`, the same images go through the original's model in a
subprocess of `--torch_python` (torch threads = `--threads`), alternating with the MindSpore run for
`--rounds` rounds; `ratio` = MindSpore time / original time (<= 1.0 means at least as fast), and
`cpu_ratio` the same for CPU seconds per step (steadier when other jobs share the machine).
`--native` builds the model with MindSpore's own ops only (vig.ops setting "native", no compiled kernels).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from vig.cli import Parser  # noqa: E402
CASES = ("infer", "train", "knn")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median_time(step, warmup: int, repeats: int) -> dict:
    """Wall-clock median, plus the process CPU seconds per step (all threads): on a shared, loaded
    machine the CPU time is the steadier measure of the work a step costs."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        step()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"step_s": statistics.median(times), "times_s": times, "cpu_s": statistics.median(cpu),
            "compile_s": first}


# ---------------------------------------------------------------------------------------------------
# Worker: one MindSpore case in this process
# ---------------------------------------------------------------------------------------------------
def run_mindspore_case(args) -> dict:
    os.environ.setdefault("GLOG_v", "3")
    import numpy as np
    import mindspore as ms
    from mindspore import nn

    sys.path.insert(0, str(REPO))
    from vig.models import create_model

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": args.jit_level})
    if args.ms_threads != 0:  # 0: MindSpore's default (25 threads whatever the core count)
        from vig.runtime import set_cpu_threads
        set_cpu_threads(args.ms_threads if args.ms_threads > 0 else None)
    ms.set_seed(0)
    net = create_model(args.model, image_size=args.image_size, ops="native" if args.native else "auto")
    images = ms.Tensor(np.load(args.images))
    if args.case == "knn":
        return {"blocks": time_knn_blocks(net, images.shape[0], args), "batch": int(images.shape[0])}
    labels = ms.Tensor((np.arange(images.shape[0]) % 1000).astype(np.int32))
    if args.case == "infer":
        net.set_train(False)

        @ms.jit
        def forward(x):
            return net(x)

        result = median_time(lambda: forward(images).asnumpy(), args.warmup, args.repeats)
    else:
        net.set_train(True)
        loss_fn = nn.CrossEntropyLoss()
        opt = nn.AdamWeightDecay(net.trainable_params(), learning_rate=1e-3, weight_decay=0.05)

        def loss_of(x, y):
            return loss_fn(net(x), y)

        grad_fn = ms.value_and_grad(loss_of, None, opt.parameters)

        @ms.jit
        def train_step(x, y):
            loss, grads = grad_fn(x, y)
            opt(grads)
            return loss

        result = median_time(lambda: train_step(images, labels).asnumpy(), args.warmup, args.repeats)
    result["batch"] = int(images.shape[0])
    result["img_per_s"] = result["batch"] / result["step_s"]
    return result


def time_knn_blocks(net, batch: int, args) -> list[dict]:
    """The kNN step of every block on random (B, C, N, 1) features: milliseconds per call."""
    import numpy as np
    import mindspore as ms
    from vig.models.graph import Grapher
    from vig.models.layers import Identity

    out = []
    rng = np.random.default_rng(0)
    graphers = [c for _, c in net.cells_and_names() if isinstance(c, Grapher)]
    for i, grapher in enumerate(graphers):
        conv = grapher.graph_conv
        channels = grapher.fc1[0].in_channels
        n = grapher.relative_pos.shape[1] if grapher.relative_pos is not None else net.cfg.grid ** 2
        feats = ms.Tensor(rng.standard_normal((batch, channels, n, 1), dtype=np.float32))
        keys = None
        if conv.r > 1:
            keys = ms.Tensor(rng.standard_normal((batch, channels, n // conv.r ** 2, 1), dtype=np.float32))

        @ms.jit
        def knn(x, y):
            return conv.knn(x, y, grapher.relative_pos)

        conv.gconv.nn = Identity()  # the graph step without its 1x1 conv: kNN, gather, max-relative

        @ms.jit
        def graph_step(x, y):
            return conv.gconv(x, conv.knn(x, y, grapher.relative_pos), y)

        timing = median_time(lambda: knn(feats, keys).asnumpy(), args.warmup, args.repeats)
        graph = median_time(lambda: graph_step(feats, keys).asnumpy(), args.warmup, args.repeats)
        out.append({"block": i, "k": conv.knn.k, "dilation": conv.knn.dilation, "nodes": n,
                    "ms": 1e3 * timing["step_s"], "graph_ms": 1e3 * graph["step_s"]})
    return out


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------
def run_subprocess(cmd: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark subprocess failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def mindspore_cmd(args, model: str, case: str, images: str) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", "--model", model, "--case", case, "--images", images,
           "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--jit_level", args.jit_level,
           "--ms_threads", str(args.ms_threads), "--image_size", str(args.image_size)]
    return cmd + (["--native"] if args.native else [])


def torch_cmd(args, model: str, case: str, images: str) -> list[str]:
    return [args.torch_python, str(REPO / "bench" / "_torch_original.py"), "--original", args.original,
            "--model", model, "--mode", case, "--images", images, "--threads", str(args.threads),
            "--warmup", str(args.warmup), "--repeats", str(args.repeats)]


def summarise(runs: list[dict]) -> dict:
    """Median over rounds of the per-round median step time; peak RSS is the max over rounds."""
    step = statistics.median(r["step_s"] for r in runs)
    out = {"step_s": step, "img_per_s": runs[0]["batch"] / step, "round_step_s": [r["step_s"] for r in runs],
           "cpu_s": statistics.median(r["cpu_s"] for r in runs),
           "peak_rss_gb": max(r["peak_rss_gb"] for r in runs)}
    if "compile_s" in runs[0]:
        out["compile_s"] = statistics.median(r["compile_s"] for r in runs)
    return out


def machine_info() -> dict:
    info = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
        info["load_avg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def check_positive(p, args, names) -> None:
    for name in names:
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")


def print_worker_result(result: dict, **labels) -> None:
    """A worker's one JSON line (what run_subprocess reads), with its labels and this process's peak RSS."""
    result.update(labels, peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
    print(json.dumps(result))


def print_result(result: dict, output: str | None) -> None:
    """The bench's JSON on stdout and, with --output, in that file (atomically)."""
    sys.path.insert(0, str(REPO))
    from vig.io import json_text, write_json

    if output:
        write_json(output, result)
    print(json_text(result), end="")


def drive(args) -> dict:
    import numpy as np

    if args.original and not args.torch_python:
        raise SystemExit("--original needs --torch_python (a python with torch installed)")
    if args.original and args.image_size != 224:
        raise SystemExit(f"--original: the original's models are built for 224, got --image_size {args.image_size}")
    if args.original and not (Path(args.original) / "vig.py").is_file():
        raise SystemExit(f"--original {args.original}: expected the original's vig_pytorch folder (with vig.py)")
    result = {"machine": machine_info(), "batch": args.batch, "image_size": args.image_size,
              "native_ops": args.native, "jit_level": args.jit_level, "ms_threads": args.ms_threads,
              "torch_threads": args.threads if args.original else None, "results": []}
    with tempfile.TemporaryDirectory(prefix="vig-bench-") as tmp:
        images = os.path.join(tmp, "images.npy")
        rng = np.random.default_rng(0)
        np.save(images, rng.standard_normal((args.batch, 3, args.image_size, args.image_size), dtype=np.float32))
        for model in args.models:
            for case in args.cases:
                entry = {"model": model, "case": case}
                ms_runs, torch_runs = [], []
                for rnd in range(args.rounds):
                    log(f"{model} {case}: MindSpore (round {rnd + 1}/{args.rounds})")
                    ms_runs.append(run_subprocess(mindspore_cmd(args, model, case, images)))
                    if args.original:
                        log(f"{model} {case}: original PyTorch (round {rnd + 1}/{args.rounds})")
                        torch_runs.append(run_subprocess(torch_cmd(args, model, case, images)))
                if case == "knn":
                    entry["blocks"] = [{k: v for k, v in b.items() if not k.endswith("ms")} for b in ms_runs[0]["blocks"]]
                    # "" = the kNN alone, "graph_" = kNN + neighbour gather + max-relative features
                    for what in ("", "graph_"):
                        sides = [("mindspore", ms_runs)] + ([("original", torch_runs)] if torch_runs else [])
                        for side, runs in sides:
                            per_block = [statistics.median(r["blocks"][i][what + "ms"] for r in runs)
                                         for i in range(len(runs[0]["blocks"]))]
                            entry[f"{side}_{what}ms_per_block"] = per_block
                            entry[f"{side}_{what}ms_total"] = sum(per_block)
                        if torch_runs:
                            entry[what + "ratio"] = entry[f"mindspore_{what}ms_total"] / entry[f"original_{what}ms_total"]
                else:
                    entry["mindspore"] = summarise(ms_runs)
                    if torch_runs:
                        entry["original"] = summarise(torch_runs)
                        entry["original"]["torch"] = torch_runs[0]["torch"]
                        entry["ratio"] = entry["mindspore"]["step_s"] / entry["original"]["step_s"]
                        entry["cpu_ratio"] = entry["mindspore"]["cpu_s"] / entry["original"]["cpu_s"]
                log(f"{model} {case}: " + json.dumps({k: v for k, v in entry.items() if k in ("ratio", "cpu_ratio", "graph_ratio")}
                                                    | ({"ms_step_s": entry["mindspore"]["step_s"]}
                                                       if "mindspore" in entry else {})))
                result["results"].append(entry)
    return result


def parse_args(argv=None):
    p = Parser(description=__doc__)
    p.add_argument("--models", nargs="+", default=["vig_ti_224_gelu", "vig_s_224_gelu"])
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps, the first of which compiles")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per round (median)")
    p.add_argument("--rounds", type=int, default=1, help="alternating MindSpore/original subprocess rounds")
    p.add_argument("--original", help="path of the original vig_pytorch folder (side-by-side mode)")
    p.add_argument("--torch_python", help="python executable with torch, for --original")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the original")
    p.add_argument("--ms_threads", type=int, default=-1,
                   help="MindSpore CPU op threads: -1 one per available core (vig.runtime.set_cpu_threads, "
                        "the default), 0 MindSpore's own default (25), N > 0 exactly N")
    p.add_argument("--jit_level", default="O0", choices=("O0", "O1"))
    p.add_argument("--native", action="store_true", help="MindSpore's own ops only (vig.ops setting \"native\")")
    p.add_argument("--output", help="also write the JSON here")
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    p.add_argument("--images", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_positive(p, args, ("batch", "image_size", "warmup", "repeats", "rounds", "threads"))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print_worker_result(run_mindspore_case(args), framework="mindspore", model=args.model, case=args.case)
        return
    print_result(drive(args), args.output)


if __name__ == "__main__":
    main()
