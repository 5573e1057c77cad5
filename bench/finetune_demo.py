#!/usr/bin/env python
"""Fine-tuning the demo's weights to some of its classes, against the same training from scratch.

    python bench/finetune_demo.py --weights results/demo/train/vig_ti_patch16_224.ckpt \\
        --data results/demo/dataset/images --classes 5 --epochs 3 --output finetune.json

Copies the first N classes of the demo folder, then runs workflow_scripts/train.py twice with the demo's
model config, num_classes=N and the same seed and epochs: once with --pretrained WEIGHTS (the classifier's
last layer starts fresh), once from scratch. Prints one JSON object: val top-1 after every epoch for both,
the fine-tuning log line, and each run's wall time. --set KEY=VALUE goes to both runs.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_throughput import REPO, print_result  # noqa: E402
from vig.cli import Parser  # noqa: E402  (model_throughput put the repository on sys.path)


def class_subset(source: Path, target: Path, classes: int) -> list[str]:
    """train/ and val/ with the first `classes` class folders of `source` (sorted, as the loader orders them)."""
    names = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())[:classes]
    if len(names) < classes:
        raise SystemExit(f"{source}/train has {len(names)} class folders, fewer than --classes {classes}")
    for split in ("train", "val"):
        for name in names:
            shutil.copytree(source / split / name, target / split / name)
    return names


def train(work: Path, data: Path, name: str, args, extra: list[str]) -> dict:
    out = work / name
    cmd = [sys.executable, str(REPO / "workflow_scripts" / "train.py"), "--vig_config", args.config,
           "--data_url", str(data), "--set", f"num_classes={args.classes}", "--set", f"epochs={args.epochs}",
           *[a for kv in args.set for a in ("--set", kv)], "--output_ckpt", str(out / "w.ckpt"),
           "--metrics", str(out / "metrics.jsonl"), "--state_root", str(out / "state"),
           "--log_dir", str(out / "logs"), "--resume", "none", *extra]
    print(f"[finetune] {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "GLOG_v": "3"})
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"val_top1": [r["val_top1"] for r in records], "seconds": round(time.time() - start, 1),
            "log": [line for line in proc.stdout.splitlines() if line.startswith("[pretrained]")]}


def main(argv=None):
    parser = Parser(description=__doc__)
    parser.add_argument("--weights", required=True, help="the demo's trained weights (its train/<arch>.ckpt)")
    parser.add_argument("--data", required=True, help="the demo's ImageNet-format folder (dataset/images)")
    parser.add_argument("--config", default=str(REPO / "config" / "models" / "vig_demo.yaml"),
                        help="model YAML (default: the demo's)")
    parser.add_argument("--classes", type=int, default=5, help="how many of the classes to keep (default 5)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of both runs (default 3)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, both runs")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="finetune_") as tmp:
        work = Path(tmp)
        names = class_subset(Path(args.data), work / "data", args.classes)
        result = {"classes": names, "epochs": args.epochs, "weights": args.weights,
                  "fine_tune": train(work, work / "data", "fine_tune", args, ["--pretrained", args.weights]),
                  "scratch": train(work, work / "data", "scratch", args, [])}
    print_result(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
