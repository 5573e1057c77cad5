"""Time the original PyTorch ViG (huawei-noah/Efficient-AI-Backbones, vig_pytorch) on CPU.

Run by bench/model_throughput.py and bench/deploy_throughput.py with a python that has torch; never
imported by the `vig` package. Mode export_onnx writes the model to --output with torch.onnx.export
(opset 17, dynamic batch; needs the `onnx` package next to torch) instead of timing it.
Prints one JSON line: {"framework", "model", "mode", "step_s", "times_s", "cpu_s", "img_per_s",
"peak_rss_gb", ...} (mode knn: per-block "blocks"), timed as the MindSpore side is. The input batch is
read from an .npy file so both frameworks see the same images.
"""
from __future__ import annotations

import json
import resource
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # vig.cli, model_throughput: no MindSpore here
from vig.cli import Parser  # noqa: E402
from model_throughput import median_time  # noqa: E402  (the MindSpore side's timing: the same statistics)


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


def load_original(folder: str):
    """The original's vig.py (isotropic models) from `folder`. Loaded by path under another name: `import
    vig` would return this repository's package, which vig.cli brought into sys.modules."""
    import importlib.util

    sys.path.insert(0, folder)  # for its own `from gcn_lib import ...`
    spec = importlib.util.spec_from_file_location("original_vig", Path(folder) / "vig.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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

        seconds = median_time(step, args.warmup, args.repeats)["step_s"]
        graph_seconds = median_time(graph_step, args.warmup, args.repeats)["step_s"]
        out.append({"block": i, "k": conv.k, "dilation": conv.d, "nodes": grapher.n, "ms": 1e3 * seconds,
                    "graph_ms": 1e3 * graph_seconds})
    return out


def export_onnx(net, images, output: str) -> dict:
    """The original model in ONNX as a PyTorch user exports it: TorchScript exporter, opset 17, batch axis
    dynamic."""
    import time

    import torch

    net.eval()
    start = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(net, images, output, opset_version=17, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return {"framework": "pytorch", "torch": torch.__version__, "export_s": time.perf_counter() - start}


def main() -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--original", required=True, help="path of the vig_pytorch folder")
    parser.add_argument("--model", required=True, help="e.g. vig_ti_224_gelu")
    parser.add_argument("--images", required=True, help=".npy float32 (B, 3, H, W)")
    parser.add_argument("--mode", choices=("infer", "train", "knn", "export_onnx"), required=True)
    parser.add_argument("--output", help="export_onnx: the .onnx file to write")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    shim = install_timm_shim()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    original = load_original(args.original)
    net = getattr(original, args.model)()
    images = torch.from_numpy(np.load(args.images))
    labels = torch.arange(images.shape[0]) % 1000
    if args.mode == "knn":
        print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "model": args.model, "mode": "knn",
                          "blocks": time_knn_blocks(net, images.shape[0], args)}))
        return
    if args.mode == "export_onnx":
        print(json.dumps(export_onnx(net, images, args.output)))
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

    timing = median_time(step, args.warmup, args.repeats)
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "timm_shim": shim,
                      "model": args.model, "mode": args.mode, "batch": int(images.shape[0]),
                      "threads": torch.get_num_threads(), "step_s": timing["step_s"], "times_s": timing["times_s"],
                      "cpu_s": timing["cpu_s"], "img_per_s": images.shape[0] / timing["step_s"],
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


if __name__ == "__main__":
    main()
