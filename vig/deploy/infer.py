"""Run an exported model over the 310-format .bin inputs, as the seed's Ascend-310 app does.

Inputs: `<stem>.bin` files of float32 (1, 3, S, S), taken in sorted order and stacked into batches.
Outputs: `result_Files/<stem>_<i>.bin`, the raw float32 output i of that image (ViG has one output:
`<stem>_0.bin`, num_classes logits), plus latency statistics. Latency is wall time of the forward
call including the host copies, per image = batch time / batch size; one warm-up batch (which
compiles the graph for its shape) is run first for each batch shape and not counted.

The model file's suffix picks the runtime (RUNNERS): a MINDIR runs through `mindspore.load` +
`nn.GraphCell` on the configured MindSpore device (what a 310 runs), an ONNX file through onnxruntime's
CPU provider. Batching, result files and latency are the same code for both.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def latency_stats(per_image_ms: list[float], total_s: float, batch_size: int, warmup_ms: float) -> dict:
    values = np.asarray(per_image_ms)
    return {
        "images": int(values.size), "batch_size": batch_size,
        "mean_ms": float(values.mean()), "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)), "min_ms": float(values.min()), "max_ms": float(values.max()),
        "throughput_images_per_s": float(values.size / total_s) if total_s > 0 else None,
        "total_s": total_s, "warmup_ms": warmup_ms,
    }


@dataclass(frozen=True)
class Runner:
    """A loaded model: `forward` maps a float32 (N, 3, S, S) batch to the list of its outputs as arrays."""
    forward: Callable[[np.ndarray], list[np.ndarray]]
    file_format: str
    runtime: str  # what ran it, for latency.json and the summary (e.g. "onnxruntime 1.32.0 CPU, 2 threads")
    input_shape: tuple | None = None  # as the file declares it, None for a dynamic axis (unknown: None)

    def check_input(self, model: Path, image_size: int, batch_size: int) -> None:
        """Refuse inputs the file does not take before anything runs."""
        if self.input_shape is None:
            return
        wanted = (None, 3, image_size, image_size)
        if len(self.input_shape) != 4 or any(d is not None and w is not None and d != w
                                             for d, w in zip(self.input_shape[1:], wanted[1:])):
            raise ValueError(f"{model}: the model takes input {list(self.input_shape)}, the .bin files hold "
                             f"float32 1x3x{image_size}x{image_size} images (exported for another image_size?)")
        if self.input_shape[0] not in (None, batch_size):
            raise ValueError(f"{model}: exported with a fixed batch of {self.input_shape[0]}; use --batch_size "
                             f"{self.input_shape[0]} or export with a dynamic batch")


def open_mindir(path: Path, threads: int | None = None) -> Runner:
    """`mindspore.load` + `nn.GraphCell` on the device the caller set (threads: see vig.deploy.cli.set_device)."""
    import mindspore as ms
    from mindspore import nn

    graph = nn.GraphCell(ms.load(str(path)))

    def forward(batch):
        result = graph(ms.Tensor(batch))
        return [item.asnumpy() for item in (result if isinstance(result, (tuple, list)) else (result,))]

    return Runner(forward, "MINDIR", f"mindspore {ms.__version__} nn.GraphCell ({ms.get_context('device_target')})")


def open_onnx(path: Path, threads: int | None = None, spinning: bool = True) -> Runner:
    """An onnxruntime session on the CPU with `threads` intra-op threads (default: the cores available).

    `spinning=False` makes idle pool threads sleep instead of spin-waiting for work: for several sessions
    in one process, where one session's spinning threads would take the cores from the one running."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1  # one graph at a time: all threads go to the ops
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own (pybind) exception types
        raise ValueError(f"{path}: onnxruntime cannot load it as an ONNX model: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one input (the image batch), the model has "
                         f"{[i.name for i in inputs]}")
    name = inputs[0].name

    def forward(batch):
        return session.run(None, {name: batch})

    shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)  # a named axis is dynamic
    return Runner(forward, "ONNX", f"onnxruntime {ort.__version__} CPU, {options.intra_op_num_threads} threads",
                  shape)


RUNNERS = {".mindir": open_mindir, ".onnx": open_onnx}


def opener_of(path: Path) -> Callable[[Path, int | None], Runner]:
    """The runner of the model file's format, chosen by its suffix; the file must exist."""
    opener = RUNNERS.get(path.suffix.lower())
    if opener is None:
        raise ValueError(f"{path}: unknown model file type {path.suffix!r} (expected one of "
                         f"{', '.join(RUNNERS)})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    return opener


def _warm_up(runner: Runner, batches: list[list[Path]], image_size: int, model: Path) -> float:
    """One untimed call per distinct batch shape (full and last partial): each compiles its shape."""
    start = time.perf_counter()
    for warm in {len(b): b for b in (batches[0], batches[-1])}.values():
        try:
            runner.forward(_load_batch(warm, image_size))
        except Exception as exc:  # MindSpore and onnxruntime raise different types for a shape they refuse
            raise RuntimeError(f"{model}: forward of a ({len(warm)}, 3, {image_size}, {image_size}) batch "
                               f"failed (a model exported with a fixed batch needs --batch_size equal to it): "
                               f"{str(exc).strip().splitlines()[0]}") from exc
    return (time.perf_counter() - start) * 1e3


def run_inference(model: str | os.PathLike, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                  batch_size: int = 1, image_size: int | None = None, progress_every: int = 1000,
                  threads: int | None = None, log=print) -> dict:
    """Write `<stem>_<i>.bin` for every input into `output_dir` (atomically); return latency stats.

    A MINDIR runs on the MindSpore device the caller set; `threads` is onnxruntime's intra-op count."""
    model = Path(model)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    open_runner = opener_of(model)
    files, image_size = list_inputs(input_dir, image_size)
    runner = open_runner(model, threads)
    runner.check_input(model, image_size, batch_size)
    batches = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    log(f"[infer] {model.name} ({runner.runtime}): {len(files)} images of 3x{image_size}x{image_size}, "
        f"batch {batch_size}")
    warmup_ms = _warm_up(runner, batches, image_size, model)
    per_image_ms, total_s, done = [], 0.0, 0
    with atomic_dir(output_dir) as tmp:
        for batch in batches:
            inputs = _load_batch(batch, image_size)
            start = time.perf_counter()
            outputs = runner.forward(inputs)
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
    stats.update({"model": str(model), "file_format": runner.file_format, "runtime": runner.runtime,
                  "image_size": image_size})
    return stats
