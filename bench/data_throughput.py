"""Images/s of the training data pipeline (decode + seed augmentation + Mixup/CutMix) on real JPEG files.

Writes a synthetic ImageNet-format folder of JPEGs to a temp dir (or uses --data), builds
`vig.data.build_train_dataset` with the configured worker count and prints one JSON object:

    .venv/bin/python bench/data_throughput.py [--images 256] [--batch_size 32] [--workers N] [--config cfg.yaml]
"""
import contextlib
import gc
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vig.cli import Parser  # noqa: E402
from vig.data import DEFAULTS, build_train_dataset, data_config  # noqa: E402
from vig.data.mixup import MixupCutmix  # noqa: E402
from vig.data.settings import effective_workers  # noqa: E402
from vig.data.transforms import TrainTransform, load_rgb  # noqa: E402
from vig.io import json_text  # noqa: E402


def parse_args():
    parser = Parser(description=__doc__)
    parser.add_argument("--images", type=int, default=256, help="synthetic JPEGs to write (default 256)")
    parser.add_argument("--classes", type=int, default=8, help="class folders (default 8)")
    parser.add_argument("--width", type=int, default=500, help="JPEG width (default 500)")
    parser.add_argument("--height", type=int, default=375, help="JPEG height (default 375)")
    parser.add_argument("--batch_size", type=int, default=32, help="per-rank batch (default 32, must be even)")
    parser.add_argument("--workers", type=int, default=None,
                        help="num_parallel_workers (default: the config's, capped at the CPU count)")
    parser.add_argument("--config", default=None, help="YAML whose data keys to use (default: seed DEFAULTS)")
    parser.add_argument("--data", default=None, help="existing <root> with train/<class>/* instead of synthetic")
    return parser.parse_args()


def write_jpegs(root, images, classes, width, height):
    """Smooth random colour fields saved as quality-90 JPEGs, like photos in size and decode cost."""
    rng = np.random.default_rng(0)
    for i in range(images):
        class_dir = os.path.join(root, "train", f"class_{i % classes:03d}")
        os.makedirs(class_dir, exist_ok=True)
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        noise = rng.integers(-12, 13, (height, width, 3))
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int64)
        pixels = np.clip(smooth + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(class_dir, f"img_{i:05d}.jpg"), quality=90)


def per_image_ms(root, dcfg, count=32):
    """Single-process cost of decode + per-image augmentation, for reading the pipeline number."""
    transform = TrainTransform(dcfg)
    class_dir = os.path.join(root, "train", sorted(os.listdir(os.path.join(root, "train")))[0])
    paths = [os.path.join(class_dir, f) for f in sorted(os.listdir(class_dir))][:count]
    start = time.perf_counter()
    for i, path in enumerate(paths):
        transform(load_rgb(path), np.random.default_rng([0, i]))
    return (time.perf_counter() - start) / len(paths) * 1000


def mixup_ms(dcfg, batch_size, repeats=5):
    mixer = MixupCutmix(dcfg["mix_up"], dcfg["cutmix"], dcfg["mixup_prob"], dcfg["switch_prob"],
                        dcfg["label_smoothing"], dcfg["num_classes"])
    size = dcfg["image_size"]
    images = np.random.default_rng(0).standard_normal((batch_size, 3, size, size), dtype=np.float32)
    labels = np.arange(batch_size) % dcfg["num_classes"]
    start = time.perf_counter()
    for r in range(repeats):
        mixer.apply(images, labels, np.random.default_rng(r))
    return (time.perf_counter() - start) / repeats * 1000


def cpu_seconds():
    """CPU time of this process plus its reaped children (the dataset's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(root, cfg, batch_size):
    cpu_start = cpu_seconds()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        dataset = build_train_dataset(root, cfg, batch_size, seed=0, epoch=0)
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    start = time.perf_counter()
    first_batch_s, count = None, 0
    for batch in iterator:
        count += batch[0].shape[0]
        if first_batch_s is None:  # worker start-up and pipeline fill, reported apart
            first_batch_s = time.perf_counter() - start
            steady_start, steady_count = time.perf_counter(), count
        print(f"[bench] {count} images, {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    total_s = time.perf_counter() - start
    steady_s = time.perf_counter() - steady_start
    steady = (count - steady_count) / steady_s if count > steady_count and steady_s > 0 else None
    del iterator, dataset  # ends the worker processes so their CPU time is counted
    gc.collect()
    time.sleep(1.0)
    # CPU per image does not depend on other load on the machine; images/s does
    cpu_ms = (cpu_seconds() - cpu_start) / count * 1000
    return dict(images=count, seconds=round(total_s, 3), images_per_s=round(count / total_s, 1),
                steady_images_per_s=round(steady, 1) if steady else None, first_batch_s=round(first_batch_s, 3),
                pipeline_cpu_ms_per_image=round(cpu_ms, 2),
                idle_machine_images_per_s_estimate=round((os.cpu_count() or 1) * 1000 / cpu_ms, 1),
                load_average_1min=round(os.getloadavg()[0], 2))


def main():
    args = parse_args()
    cfg = dict(DEFAULTS)
    if args.config:
        import yaml
        with open(args.config) as handle:
            cfg.update(yaml.safe_load(handle) or {})
    if args.workers is not None:
        cfg["num_parallel_workers"] = args.workers
    with tempfile.TemporaryDirectory(prefix="vig_data_bench_") as tmp:
        root = args.data or tmp
        if not args.data:
            print(f"[bench] writing {args.images} JPEGs of {args.width}x{args.height} to {root}", file=sys.stderr,
                  flush=True)
            write_jpegs(root, args.images, args.classes, args.width, args.height)
        cfg["num_classes"] = len(os.listdir(os.path.join(root, "train")))
        dcfg = data_config(cfg)
        result = measure(root, cfg, args.batch_size)
        result.update(
            per_image_ms_single_process=round(per_image_ms(root, dcfg), 2),
            mixup_ms_per_batch=round(mixup_ms(dcfg, args.batch_size), 2),
            batch_size=args.batch_size, image_size=dcfg["image_size"],
            workers=effective_workers(dcfg["num_parallel_workers"]),
            workers_configured=dcfg["num_parallel_workers"], cpu_count=os.cpu_count(),
            auto_augment=dcfg["auto_augment"], re_prob=dcfg["re_prob"], mix_up=dcfg["mix_up"],
            cutmix=dcfg["cutmix"],
            peak_rss_mb_main=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            peak_rss_mb_workers=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        )
    print(json_text(result), end="")


if __name__ == "__main__":
    main()
