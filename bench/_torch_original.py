"""Time the original PyTorch ViG (huawei-noah/Efficient-AI-Backbones, vig_pytorch) on CPU.

Run by bench/model_throughput.py with a python that has torch; never imported by the `vig` package.
Prints one JSON line: {"model", "infer_s", "train_s", "peak_rss_gb", ...}. The input batch is read from
an .npy file so both frameworks see the same images.
"""
from __future__ import annotations

import json
import resource
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # vig.cli only: no MindSpore in this venv
from vig.cli import Parser  # noqa: E402


def install_timm_shim() -> bool:
    """The original needs six names from timm. When timm cannot be imported (its torchvision wheel is
    often built for another torch), provide equivalent ones so only torch is required."""
    try:
        import timm.models.layers  # noqa: F401
        return False
    except Exception:  # noqa: BLE001 - any import failure means: use the shim
        for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
            del sys.modules[name]
    import torch
    from torch import nn

    class DropPath(nn.Module):
        def __init__(self, drop_prob=0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    modules = {n: types.ModuleType(n) for n in
               ("timm", "timm.data", "timm.models", "timm.models.helpers", "timm.models.layers",
                "timm.models.registry")}
    modules["timm.data"].IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
    modules["timm.data"].IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
    modules["timm.models.helpers"].load_pretrained = lambda *a, **k: None
    layers = modules["timm.models.layers"]
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = DropPath, to_2tuple, torch.nn.init.trunc_normal_
    modules["timm.models.registry"].register_model = lambda fn: fn
    sys.modules.update(modules)
    return True


def median_time(fn, warmup: int, repeats: int) -> tuple[float, list[float], float]:
    """Median wall seconds, all wall times, median process CPU seconds per call."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return sorted(times)[len(times) // 2], times, sorted(cpu)[len(cpu) // 2]


def time_knn_blocks(net, batch: int, args) -> list[dict]:
    """The original's DenseDilatedKnnGraph of every Grapher on random (B, C, N, 1) features, drawn in the
    same order as bench/model_throughput.py draws them for the MindSpore model."""
    import numpy as np
    import torch

    net.eval()
    rng = np.random.default_rng(0)
    out = []
    graphers = [m for m in net.modules() if type(m).__name__ == "Grapher"]
    for i, grapher in enumerate(graphers):
        conv = grapher.graph_conv
        feats = torch.from_numpy(rng.standard_normal((batch, grapher.channels, grapher.n, 1), dtype=np.float32))
        keys = None
        if conv.r > 1:
            keys = torch.from_numpy(rng.standard_normal((batch, grapher.channels, grapher.n // conv.r ** 2, 1),
                                                        dtype=np.float32))
        rel = grapher.relative_pos

        def step():
            with torch.no_grad():
                conv.dilated_knn_graph(feats, keys, rel)

        conv.gconv.nn = torch.nn.Identity()  # the graph step without its 1x1 conv: kNN, gather, max-relative

        def graph_step():
            with torch.no_grad():
                conv.gconv(feats, conv.dilated_knn_graph(feats, keys, rel), keys)

        seconds, _, _ = median_time(step, args.warmup, args.repeats)
        graph_seconds, _, _ = median_time(graph_step, args.warmup, args.repeats)
        out.append({"block": i, "k": conv.k, "dilation": conv.d, "nodes": grapher.n, "ms": 1e3 * seconds,
                    "graph_ms": 1e3 * graph_seconds})
    return out


def main() -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--original", required=True, help="path of the vig_pytorch folder")
    parser.add_argument("--model", required=True, help="e.g. vig_ti_224_gelu")
    parser.add_argument("--images", required=True, help=".npy float32 (B, 3, H, W)")
    parser.add_argument("--mode", choices=("infer", "train", "knn"), required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    shim = install_timm_shim()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sys.path.insert(0, args.original)
    import vig as original  # the original's vig.py (isotropic models)

    net = getattr(original, args.model)()
    images = torch.from_numpy(np.load(args.images))
    labels = torch.arange(images.shape[0]) % 1000
    if args.mode == "knn":
        print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "model": args.model, "mode": "knn",
                          "blocks": time_knn_blocks(net, images.shape[0], args)}))
        return
    if args.mode == "infer":
        net.eval()

        def step():
            with torch.no_grad():
                net(images)
    else:
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(net(images), labels).backward()
            opt.step()

    seconds, times, cpu = median_time(step, args.warmup, args.repeats)
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "timm_shim": shim,
                      "model": args.model, "mode": args.mode, "batch": int(images.shape[0]),
                      "threads": torch.get_num_threads(), "step_s": seconds, "times_s": times, "cpu_s": cpu,
                      "img_per_s": images.shape[0] / seconds,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


if __name__ == "__main__":
    main()
