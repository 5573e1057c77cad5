#!/usr/bin/env python
"""Run an exported model over .bin inputs as the seed's 310 app does; write logits and latency.

    python workflow_scripts/infer.py --model export/vig_s_patch16_224.mindir \\
        --input_dir preprocess_Result/images --output_dir result_Files --latency latency.json --batch_size 16
    python workflow_scripts/infer.py --model export/vig_s_patch16_224.onnx --threads 2 ...   # onnxruntime

The model file's suffix picks the runtime: .mindir through mindspore.load + nn.GraphCell (what a 310
runs; device CPU unless --device_target says otherwise), .onnx through onnxruntime on the CPU. --mindir
is the same option as --model. Each INPUT_DIR/<stem>.bin (float32 1x3xSxS) gives OUTPUT_DIR/<stem>_0.bin
(raw float32 logits), whatever the runtime. LATENCY gets per-image mean/p50/p90 ms (forward incl. host
copies, batch time / batch size, after one untimed warm-up per batch shape), image count, batch size,
throughput and the runtime that ran it.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # before MindSpore is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, run_cli  # noqa: E402
from vig.deploy.cli import set_device  # noqa: E402
from vig.io import write_json  # noqa: E402


def run(argv=None) -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--model", "--mindir", dest="model", required=True, metavar="PATH",
                        help="exported model, .mindir or .onnx (dynamic or matching batch)")
    parser.add_argument("--input_dir", required=True, metavar="BINDIR", help="folder of <stem>.bin inputs")
    parser.add_argument("--output_dir", required=True, metavar="DIR",
                        help="result folder to create (result_Files; built beside it, then moved in)")
    parser.add_argument("--latency", required=True, metavar="JSON", help="latency statistics file to write")
    parser.add_argument("--batch_size", type=int, default=1, help="images per forward call (default 1)")
    parser.add_argument("--image_size", type=int, default=None,
                        help="side S of the inputs (default: derived from the first file's size)")
    parser.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"],
                        help="MindSpore device of a MINDIR (default CPU; an ONNX model runs on the CPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the runtime: onnxruntime's intra-op threads, MindSpore's CPU op "
                             "threads (default: the cores available)")
    parser.add_argument("--progress_every", type=int, default=1000, help="progress line every N images")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or any(n is not None and n < 1 for n in (args.image_size, args.threads)):
        parser.error("--batch_size, --image_size and --threads must be >= 1")

    from vig.deploy.infer import run_inference

    if Path(args.model).suffix.lower() == ".mindir":  # onnxruntime needs no MindSpore device
        set_device({"device_target": args.device_target}, threads=args.threads)
    stats = run_inference(args.model, args.input_dir, args.output_dir, args.batch_size, args.image_size,
                          args.progress_every, threads=args.threads)
    write_json(args.latency, stats)
    print(f"[infer] {stats['images']} images: mean {stats['mean_ms']:.2f} ms, p50 {stats['p50_ms']:.2f} ms, "
          f"p90 {stats['p90_ms']:.2f} ms per image; {stats['throughput_images_per_s']:.1f} images/s "
          f"-> {args.latency}")


def main(argv=None) -> int:
    return run_cli(run, argv, prog="infer.py", bad_input=(ValueError, FileNotFoundError),
                   failures=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
