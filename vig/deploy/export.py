"""Checkpoint -> MINDIR with a dynamic batch dimension (the file an Ascend 310 or `nn.GraphCell` runs).

Unlike the seed's export.py (input fixed at (1, 3, S, S)), the batch axis is left open, so one file
serves any batch size. The checkpoint is loaded strictly: every model parameter must be present with
its shape, and entries that are neither model parameters nor recognised training state are an error.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

# training state a checkpoint may carry next to the weights (optimizer moments, EMA copies)
TRAINING_STATE_PREFIXES = ("adam_m.", "adam_v.", "moments.", "moment1.", "moment2.", "accum.", "ema.")
FILE_SUFFIXES = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}


class CheckpointError(ValueError):
    """A checkpoint that does not match the model built from the config."""


class ExportCheckError(RuntimeError):
    """The exported file does not reproduce the network it was exported from."""


@contextlib.contextmanager
def native_ops():
    """Build cells with MindSpore's own ops only: the compiled CPU kernels (vig/models/kernels) are
    `ops.Custom` calls into a local .so, which neither an Ascend 310 nor another machine can run."""
    previous = os.environ.get("VIG_NATIVE_OPS")
    os.environ["VIG_NATIVE_OPS"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["VIG_NATIVE_OPS"]
        else:
            os.environ["VIG_NATIVE_OPS"] = previous


def is_training_state(name: str) -> bool:
    # model parameters live under a module path (`stem.convs.0.weight`) or are `pos_embed`;
    # dot-free names such as epoch_num, step_num, global_step, learning_rate are bookkeeping
    return name.startswith(TRAINING_STATE_PREFIXES) or "." not in name


def load_checkpoint_strict(net, checkpoint: str | os.PathLike, log=print) -> list[str]:
    """Load every parameter of `net` from `checkpoint`; return the ignored training-state names."""
    import mindspore as ms

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    try:
        saved = ms.load_checkpoint(str(checkpoint))
    except (ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{checkpoint}: not a readable MindSpore checkpoint: {exc}") from None
    wanted = net.parameters_dict()
    missing = [n for n in wanted if n not in saved]
    unexpected = [n for n in saved if n not in wanted and not is_training_state(n)]
    mismatched = [f"{n}: checkpoint {tuple(saved[n].shape)} vs model {tuple(p.shape)}"
                  for n, p in wanted.items() if n in saved and tuple(saved[n].shape) != tuple(p.shape)]
    if missing or unexpected or mismatched:
        lines = [f"missing from the checkpoint: {n}" for n in missing]
        lines += [f"not a parameter of the model: {n}" for n in unexpected]
        lines += [f"shape mismatch {m}" for m in mismatched]
        raise CheckpointError(f"{checkpoint}: does not match the model ({len(missing)} missing, "
                              f"{len(unexpected)} unexpected, {len(mismatched)} with another shape); is the "
                              f"config the one it was trained with?\n  " + "\n  ".join(lines))
    not_loaded, _ = ms.load_param_into_net(net, {n: saved[n] for n in wanted}, strict_load=True)
    if not_loaded:
        raise CheckpointError(f"{checkpoint}: MindSpore did not load {not_loaded}")
    ignored = sorted(n for n in saved if n not in wanted)
    if ignored:
        log(f"[export] ignored {len(ignored)} training-state entries of {checkpoint.name} "
            f"(e.g. {', '.join(ignored[:4])})")
    return ignored


def _eager_forward(net, x) -> np.ndarray:
    """The network's output in PyNative mode: the reference needs no graph compile per batch size."""
    import mindspore as ms

    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        return net(x).asnumpy()
    finally:
        ms.set_context(mode=previous)


def check_dynamic_batch(net, mindir: str | os.PathLike, image_size: int, batch_sizes=(2, 1), seed: int = 0,
                        name: str | None = None, log=print) -> dict:
    """Run the MINDIR and the network on the same random batches of each size; raise if they differ.

    Catches ops whose loaded shape inference breaks when the batch size changes between calls
    (the sizes are run in sequence, a larger one first). Returns {batch size: max abs difference}.
    """
    import mindspore as ms
    from mindspore import nn

    name = name or str(mindir)
    graph = nn.GraphCell(ms.load(str(mindir)))
    rng = np.random.default_rng(seed)
    diffs = {}
    for batch in batch_sizes:
        x = ms.Tensor(rng.standard_normal((batch, 3, image_size, image_size), dtype=np.float32))
        try:
            got = graph(x).asnumpy()
        except (RuntimeError, ValueError, TypeError) as exc:
            after = f" (run after batch sizes {list(diffs)})" if diffs else ""
            raise ExportCheckError(f"{name}: the exported graph fails on a batch of {batch}{after}: "
                                   f"{str(exc).strip().splitlines()[0]}") from exc
        want = _eager_forward(net, x)
        diffs[batch] = float(np.abs(got - want).max())
        scale = max(1.0, float(np.abs(want).max()))
        if got.shape != want.shape or diffs[batch] > 1e-4 * scale:
            raise ExportCheckError(f"{name}: for a batch of {batch} the exported graph gives outputs "
                                   f"{got.shape} that differ from the network's {want.shape} by up to "
                                   f"{diffs[batch]:.3g} (allowed {1e-4 * scale:.3g})")
    log(f"[export] checked {name} against the network for batch sizes {list(batch_sizes)}: "
        f"max abs difference {max(diffs.values()):.3g}")
    return diffs


def export_model(cfg: dict, checkpoint: str | os.PathLike, output: str | os.PathLike,
                 file_format: str = "MINDIR", check: bool = True, log=print) -> Path:
    """Build the eval network from `cfg` (native ops), load `checkpoint`, export, check the file
    reproduces the network for two batch sizes, and move it to `output` (mode 0644).

    The caller sets the device and the mode (the CLI: GRAPH_MODE); nothing global is changed here.
    """
    import mindspore as ms

    from ..config import build_model

    output = Path(output)
    suffix = FILE_SUFFIXES.get(file_format)
    if suffix is None:
        raise ValueError(f"file_format={file_format!r}: expected one of {', '.join(FILE_SUFFIXES)}")
    if output.suffix.lower() != suffix:
        raise ValueError(f"{output}: expected a file name ending in {suffix} for file_format {file_format}")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    with native_ops():
        net = build_model(cfg, training=False)
    load_checkpoint_strict(net, checkpoint, log)
    net.set_train(False)
    size = cfg["image_size"]
    log(f"[export] {checkpoint} loaded strictly into {cfg['arch']}; exporting {file_format} ...")
    dynamic_batch = ms.Tensor(shape=[None, 3, size, size], dtype=ms.float32)
    output.parent.mkdir(parents=True, exist_ok=True)
    # MindSpore writes 0400 files and chmods the folder it writes into to 0700: use a private temp folder
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        ms.export(net, dynamic_batch, file_name=os.path.join(tmp, "model"), file_format=file_format)
        produced = [p for p in Path(tmp).iterdir() if p.suffix.lower() == suffix]
        if len(produced) != 1:
            raise RuntimeError(f"mindspore.export wrote {sorted(os.listdir(tmp))} into {tmp}, expected one "
                               f"{suffix} file")
        if check and file_format == "MINDIR":
            check_dynamic_batch(net, produced[0], size, name=str(output), log=log)
        os.chmod(produced[0], 0o644)
        os.replace(produced[0], output)
    log(f"[export] {cfg['arch']} -> {output} ({file_format}, input [None, 3, {size}, {size}] float32, "
        f"{output.stat().st_size / 1e6:.2f} MB)")
    return output
