"""Run an exported MINDIR over the 310-format .bin inputs, as the seed's Ascend-310 app does.

Inputs: `<stem>.bin` files of float32 (1, 3, S, S), taken in sorted order and stacked into batches.
Outputs: `result_Files/<stem>_<i>.bin`, the raw float32 output i of that image (ViG has one output:
`<stem>_0.bin`, num_classes logits), plus latency statistics. Latency is wall time of the forward
call including the host copies, per image = batch time / batch size; one warm-up batch (which
compiles the graph for its shape) is run first for each batch shape and not counted.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from ..io import atomic_dir

BYTES_PER_VALUE = 4  # float32


def list_inputs(input_dir: str | os.PathLike, image_size: int | None) -> tuple[list[Path], int]:
    """Sorted .bin inputs and the image side; every file must be one float32 (1, 3, S, S) tensor."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: input folder of .bin files not found")
    files = sorted(input_dir.glob("*.bin"))
    if not files:
        raise ValueError(f"{input_dir}: no .bin input files (expected one float32 1x3xSxS tensor per image)")
    if image_size is None:
        values = files[0].stat().st_size // BYTES_PER_VALUE
        image_size = math.isqrt(values // 3)
    expected = 3 * image_size * image_size * BYTES_PER_VALUE
    wrong = [f"{f.name}: {f.stat().st_size} bytes" for f in files if f.stat().st_size != expected]
    if wrong:
        raise ValueError(f"{input_dir}: expected every .bin to hold float32 1x3x{image_size}x{image_size} "
                         f"({expected} bytes); these do not:\n  " + "\n  ".join(wrong))
    return files, image_size


def _load_batch(files: list[Path], image_size: int) -> np.ndarray:
    return np.stack([np.fromfile(f, dtype=np.float32).reshape(3, image_size, image_size) for f in files])


def _as_outputs(result) -> list[np.ndarray]:
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [item.asnumpy() for item in items]


def latency_stats(per_image_ms: list[float], total_s: float, batch_size: int, warmup_ms: float) -> dict:
    values = np.asarray(per_image_ms)
    return {
        "images": int(values.size), "batch_size": batch_size,
        "mean_ms": float(values.mean()), "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)), "min_ms": float(values.min()), "max_ms": float(values.max()),
        "throughput_images_per_s": float(values.size / total_s) if total_s > 0 else None,
        "total_s": total_s, "warmup_ms": warmup_ms,
    }


def _warm_up(graph, batches: list[list[Path]], image_size: int, mindir: Path) -> float:
    """One untimed call per distinct batch shape (full and last partial): each compiles its shape."""
    import mindspore as ms

    start = time.perf_counter()
    for warm in {len(b): b for b in (batches[0], batches[-1])}.values():
        try:
            _as_outputs(graph(ms.Tensor(_load_batch(warm, image_size))))
        except (RuntimeError, ValueError, TypeError) as exc:
            raise RuntimeError(f"{mindir}: forward of a ({len(warm)}, 3, {image_size}, {image_size}) batch "
                               f"failed (a MINDIR exported with a fixed batch needs --batch_size equal to it): "
                               f"{str(exc).strip().splitlines()[0]}") from exc
    return (time.perf_counter() - start) * 1e3


def run_inference(mindir: str | os.PathLike, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                  batch_size: int = 1, image_size: int | None = None, progress_every: int = 1000,
                  log=print) -> dict:
    """Write `<stem>_<i>.bin` for every input into `output_dir` (atomically); return latency stats."""
    import mindspore as ms
    from mindspore import nn

    mindir = Path(mindir)
    if not mindir.is_file():
        raise FileNotFoundError(f"{mindir}: MINDIR file not found")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    files, image_size = list_inputs(input_dir, image_size)
    graph = nn.GraphCell(ms.load(str(mindir)))
    batches = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    log(f"[infer] {mindir.name}: {len(files)} images of 3x{image_size}x{image_size}, batch {batch_size}")
    warmup_ms = _warm_up(graph, batches, image_size, mindir)
    per_image_ms, total_s, done = [], 0.0, 0
    with atomic_dir(output_dir) as tmp:
        for batch in batches:
            inputs = _load_batch(batch, image_size)
            start = time.perf_counter()
            outputs = _as_outputs(graph(ms.Tensor(inputs)))
            elapsed = time.perf_counter() - start
            total_s += elapsed
            per_image_ms += [elapsed * 1e3 / len(batch)] * len(batch)
            for row, path in enumerate(batch):
                for index, output in enumerate(outputs):
                    np.ascontiguousarray(output[row], dtype=np.float32).tofile(tmp / f"{path.stem}_{index}.bin")
            done += len(batch)
            if done % progress_every < len(batch) or done == len(files):
                log(f"[infer] {done}/{len(files)} images, {np.mean(per_image_ms):.2f} ms/image")
    stats = latency_stats(per_image_ms, total_s, batch_size, warmup_ms)
    stats.update({"mindir": str(mindir), "image_size": image_size, "device": ms.get_context("device_target")})
    return stats
