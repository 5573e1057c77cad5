"""Checkpoint -> MINDIR (the file an Ascend 310 or `nn.GraphCell` runs) or ONNX (onnxruntime), with a
dynamic batch dimension.

Unlike the seed's export.py (input fixed at (1, 3, S, S)), the batch axis is left open, so one file
serves any batch size. The weights (a project checkpoint or an original PyTorch .pth) are loaded
strictly by vig.weights. MINDIR is written from the network built with MindSpore's native ops; ONNX
from the same weights built with the "onnx" ops setting (vig/ops/onnx.py: the ops MindSpore's ONNX
exporter cannot map, in ops it can), its batch axis opened by vig/deploy/onnx_file.py. Either file is
checked against the native-op network before it is moved into place.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

FILE_SUFFIXES = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}  # the seed's formats
EXPORT_BATCH = 2  # the batch MindSpore writes the ONNX graph for, before its batch axis is opened


class ExportCheckError(RuntimeError):
    """The exported file does not reproduce the network it was exported from."""




def check_file_format(file_format: str, device_target: str) -> None:
    """MINDIR and ONNX everywhere; AIR only where MindSpore can write it: device_target Ascend on an
    Ascend machine."""
    if file_format not in FILE_SUFFIXES:
        raise ValueError(f"file_format={file_format!r}: expected one of {', '.join(FILE_SUFFIXES)}")
    if file_format == "AIR":
        from ..cli import device_missing

        missing = device_missing("Ascend")
        if missing or device_target != "Ascend":
            raise ValueError(f"file_format AIR: MindSpore writes AIR only with device_target Ascend on an "
                             f"Ascend machine ({missing or f'device_target is {device_target}'}); use "
                             f"file_format MINDIR, which every backend and the Ascend 310 run")


def _eager_forward(net, x) -> np.ndarray:
    """The network's output in PyNative mode: the reference needs no graph compile per batch size."""
    import mindspore as ms

    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        return net(x).asnumpy()
    finally:
        ms.set_context(mode=previous)


def rounding_sensitivity(net, x: np.ndarray, trials: int = 3, seed: int = 0) -> float:
    """How far `net`'s outputs move when every input value changes by one float32 rounding step (2^-23
    relative, random sign): the largest change over `trials` such inputs.

    The kNN makes ViG discontinuous: a neighbour whose distance ties another's to ~1e-7 flips with any
    rounding change, and with it a max-relative feature. Another runtime (onnxruntime's kernels sum in
    another order) flips such neighbours too, so its logits may differ by this much from a correct graph."""
    import mindspore as ms

    from ..predictions import largest_move

    def forward(batch):
        return _eager_forward(net, ms.Tensor(batch))

    return largest_move(forward, x, forward(x), trials, seed)


def check_dynamic_batch(net, path: str | os.PathLike, image_size: int, batch_sizes=(2, 1), seed: int = 0,
                        name: str | None = None, log=print, file_format: str = "MINDIR") -> dict:
    """Run the exported file (MINDIR: nn.GraphCell; ONNX: onnxruntime) and the network on the same random
    batches of each size; raise ExportCheckError naming the file if they differ.

    Allowed: 1e-4 of the largest logit (at least 1e-4). For ONNX, a larger difference passes only if
    the network itself moves as far when its input changes by one rounding step (rounding_sensitivity:
    near-tied kNN neighbours that another runtime's rounding flips), by at most twice that; a wrong op
    moves every logit by far more. The sizes run in sequence, a larger one first, which catches ops whose
    loaded shape inference breaks when the batch size changes between calls. Returns {batch size: max
    abs difference}.
    """
    import mindspore as ms

    from .infer import open_mindir, open_onnx

    name = name or str(path)
    try:
        runner = (open_onnx if file_format == "ONNX" else open_mindir)(Path(path))
    except ValueError as exc:
        raise ExportCheckError(f"{name}: {exc}") from exc
    rng = np.random.default_rng(seed)
    diffs = {}
    for batch in batch_sizes:
        x = rng.standard_normal((batch, 3, image_size, image_size), dtype=np.float32)
        try:
            got = runner.forward(x)[0]
        except Exception as exc:  # MindSpore and onnxruntime raise different types
            after = f" (run after batch sizes {list(diffs)})" if diffs else ""
            raise ExportCheckError(f"{name}: the exported graph fails on a batch of {batch}{after}: "
                                   f"{str(exc).strip().splitlines()[0]}") from exc
        want = _eager_forward(net, ms.Tensor(x))
        if got.shape != want.shape:
            raise ExportCheckError(f"{name}: for a batch of {batch} the exported graph gives outputs "
                                   f"{got.shape}, the network {want.shape}")
        diffs[batch] = float(np.abs(got - want).max())
        allowed = 1e-4 * max(1.0, float(np.abs(want).max()))
        why = f"allowed {allowed:.3g}"
        if diffs[batch] > allowed and file_format == "ONNX":
            moved = rounding_sensitivity(net, x)
            why = (f"allowed {allowed:.3g}, or twice the {moved:.3g} the network itself moves under a "
                   f"one-rounding-step change of its input")
            if diffs[batch] <= 2 * moved:
                log(f"[export] {name}: batch of {batch}: onnxruntime differs by {diffs[batch]:.3g}, within "
                    f"twice what the network moves under a one-rounding-step input change ({moved:.3g}: "
                    f"near-tied kNN neighbours)")
                allowed = 2 * moved
        if diffs[batch] > allowed:
            raise ExportCheckError(f"{name}: for a batch of {batch} the exported graph's outputs differ from "
                                   f"the network's by up to {diffs[batch]:.3g} ({why})")
    log(f"[export] checked {name} against the network for batch sizes {list(batch_sizes)}: "
        f"max abs difference {max(diffs.values()):.3g}")
    return diffs


def _export_onnx(net, image_size: int, path: str, rewrite: bool = True) -> None:
    """`net` (built with the "onnx" ops setting) -> `path`, its batch axis opened, and with `rewrite` its
    GELUs made exact (Erf) and its batched gathers row gathers (onnx_file.py: onnxruntime runs those
    several times faster than what MindSpore's exporter can write)."""
    import mindspore as ms
    import onnx

    from .onnx_file import exact_gelu, flat_gathers, open_batch_axis

    example = ms.Tensor(np.zeros((EXPORT_BATCH, 3, image_size, image_size), np.float32))
    stem = path[:-len(".onnx")]
    ms.export(net, example, file_name=stem, file_format="ONNX")
    model = open_batch_axis(onnx.load(path), EXPORT_BATCH)
    if rewrite:
        exact_gelu(model)
        flat_gathers(model)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def export_model(cfg: dict, checkpoint: str | os.PathLike, output: str | os.PathLike,
                 file_format: str = "MINDIR", check: bool = True, log=print) -> Path:
    """Build the eval network from `cfg` (native ops), load `checkpoint`, export as `file_format` (MINDIR,
    ONNX, or AIR on Ascend), check the file reproduces the native network for batch sizes 2 and 1
    (raising ExportCheckError naming `output`), and move it to `output` (mode 0644).

    The caller sets the device and the mode (the CLI: GRAPH_MODE); nothing global is changed here.
    """
    import mindspore as ms

    from ..config import build_model
    from ..weights import load_weights

    output = Path(output)
    check_file_format(file_format, cfg["device_target"])
    suffix = FILE_SUFFIXES[file_format]
    if output.suffix.lower() != suffix:
        raise ValueError(f"{output}: expected a file name ending in {suffix} for file_format {file_format}")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: weights file not found")
    # MindSpore's own ops only: the compiled CPU kernels are `ops.Custom` calls into a local .so, which
    # neither an Ascend 310 nor another machine can run
    net = build_model(cfg, training=False, ops="native")
    load_weights(net, checkpoint, log=log, tag="[export]", target=cfg["arch"])
    net.set_train(False)
    size = cfg["image_size"]
    log(f"[export] exporting {cfg['arch']} as {file_format} ...")
    output.parent.mkdir(parents=True, exist_ok=True)
    # MindSpore writes 0400 files and chmods the folder it writes into to 0700: use a private temp folder
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        if file_format == "ONNX":
            onnx_net = build_model(cfg, training=False, ops="onnx")
            ms.load_param_into_net(onnx_net, net.parameters_dict(), strict_load=True)
            _export_onnx(onnx_net, size, os.path.join(tmp, "model.onnx"))
        else:
            dynamic_batch = ms.Tensor(shape=[None, 3, size, size], dtype=ms.float32)
            ms.export(net, dynamic_batch, file_name=os.path.join(tmp, "model"), file_format=file_format)
        produced = [p for p in Path(tmp).iterdir() if p.suffix.lower() == suffix]
        if len(produced) != 1:
            raise RuntimeError(f"mindspore.export wrote {sorted(os.listdir(tmp))} into {tmp}, expected one "
                               f"{suffix} file")
        if check and file_format in ("MINDIR", "ONNX"):
            check_dynamic_batch(net, produced[0], size, name=str(output), log=log, file_format=file_format)
        os.chmod(produced[0], 0o644)
        os.replace(produced[0], output)
    log(f"[export] {cfg['arch']} -> {output} ({file_format}, input [None, 3, {size}, {size}] float32, "
        f"{output.stat().st_size / 1e6:.2f} MB)")
    return output
