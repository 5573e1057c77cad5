"""Convert released PyTorch ViG weights (huawei-noah/Efficient-AI-Backbones, vig_pytorch) to MindSpore.

    python -m vig.convert IN.pth OUT.ckpt --arch NAME [--num_classes N] [--key state_dict]

Our cells are named after the original's module paths, so the key mapping is the identity except
for BatchNorm, whose parameters MindSpore names differently:

    ========================================  ==========================================  =============
    PyTorch key (original)                    MindSpore parameter (ours)                  note
    ========================================  ==========================================  =============
    ``<bn>.weight``                           ``<bn>.gamma``                              BatchNorm2d
    ``<bn>.bias``                             ``<bn>.beta``                               BatchNorm2d
    ``<bn>.running_mean``                     ``<bn>.moving_mean``                        BatchNorm2d
    ``<bn>.running_var``                      ``<bn>.moving_variance``                    BatchNorm2d
    ``<bn>.num_batches_tracked``              (dropped)                                   BN counter
    ``backbone.<i>.0.relative_pos``           ``backbone.<i>.0.relative_pos``             frozen buffer
    anything else (conv ``weight``/``bias``,  same name                                   identity
    ``pos_embed``, GIN ``eps``)
    ========================================  ==========================================  =============

``<bn>`` is any module that is a BatchNorm in our model (it has ``moving_mean``) or in the checkpoint
(it has ``running_mean``): ``stem.convs.1``, ``backbone.0.0.fc1.1``,
``backbone.0.0.graph_conv.gconv.nn.1``, ``backbone.2.conv.1`` (pyramid downsample), ``prediction.1``.
A DDP ``module.`` prefix is removed; a checkpoint wrapped in a dict is unwrapped from
``state_dict``, ``model`` or ``state_dict_ema`` (first found, or ``--key``). Floating tensors are
stored as float32 (the model's dtype).

Loading never runs pickled code: with torch installed ``torch.load(weights_only=True)``; without it
the torch zip format is read here with an unpickler that only admits tensor rebuilding, storage
types and ``OrderedDict``. Any mismatch (missing, unexpected, mis-shaped or non-float key) is one
error listing every offending key. The output is written to a temporary file and renamed.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import pickle
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import save_checkpoint
from .weights import WeightsError, fit_tensors, model_shapes

WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")
DDP_PREFIX = "module."
HEAD_BIAS = "prediction.4.bias"
_BN_RENAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_DROPPED_SUFFIXES = ("num_batches_tracked",)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle references something other than tensors and plain containers."""


# The same error as every strict load (vig.weights), under the name this module always gave it.
ConversionError = WeightsError


# ----------------------------------------------------------------------------------------------
# Reading a torch checkpoint without executing pickled code
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.FloatStorage` & co. inside a pickle: only says how to read the bytes."""

    name: str
    dtype: np.dtype
    bfloat16: bool = False


_STORAGE_TYPES = {t.name: t for t in (
    _StorageType("FloatStorage", np.dtype(np.float32)),
    _StorageType("DoubleStorage", np.dtype(np.float64)),
    _StorageType("HalfStorage", np.dtype(np.float16)),
    _StorageType("BFloat16Storage", np.dtype(np.uint16), bfloat16=True),
    _StorageType("LongStorage", np.dtype(np.int64)),
    _StorageType("IntStorage", np.dtype(np.int32)),
    _StorageType("ShortStorage", np.dtype(np.int16)),
    _StorageType("CharStorage", np.dtype(np.int8)),
    _StorageType("ByteStorage", np.dtype(np.uint8)),
    _StorageType("BoolStorage", np.dtype(np.bool_)),
)}


@dataclass(frozen=True)
class _Storage:
    data: np.ndarray  # 1-D, native byte order
    kind: _StorageType


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """numpy twin of torch._utils._rebuild_tensor(_v2): a bounds-checked strided copy of a storage."""
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError(f"tensor built from {type(storage).__name__}, expected a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(isinstance(v, int) and v >= 0 for v in (storage_offset, *size, *stride))):
        raise UnsafeCheckpointError(
            f"bad tensor layout: offset {storage_offset!r}, size {size!r}, stride {stride!r}; expected a "
            "non-negative integer offset and tuples of non-negative integer sizes and strides of equal length")
    if 0 in size:
        array = np.empty(size, storage.data.dtype)
    else:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.data.size:  # as_strided would read past the buffer
            raise UnsafeCheckpointError(
                f"tensor of size {size} (offset {storage_offset}, stride {stride}) overruns its storage of "
                f"{storage.data.size} elements")
        itemsize = storage.data.itemsize
        array = np.lib.stride_tricks.as_strided(
            storage.data[storage_offset:], shape=size, strides=[s * itemsize for s in stride]).copy()
    if storage.kind.bfloat16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _rebuild_parameter(data, *_ignored):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only what a state dict needs; everything else is refused by name, before it is called."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, big_endian: bool):
        super().__init__(file)
        self._archive, self._prefix, self._big_endian = archive, prefix, big_endian
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise UnsafeCheckpointError(
            f"refusing to load global '{module}.{name}' from the pickle; only tensors, "
            "dicts and OrderedDicts are allowed (weights_only). If this is a full training checkpoint "
            "(optimizer, argparse args), save just its weights with torch from a trusted copy: "
            "torch.save(ckpt['state_dict'], 'weights.pth')")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise UnsafeCheckpointError(f"unsupported persistent id {pid!r}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if key not in self._storages:
            record = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(record)
            except KeyError:
                raise UnsafeCheckpointError(f"storage record {record!r} is missing") from None
            dtype = kind.dtype.newbyteorder(">") if self._big_endian else kind.dtype
            if not isinstance(numel, int) or numel < 0 or len(raw) != numel * dtype.itemsize:
                raise UnsafeCheckpointError(
                    f"storage {record!r} has {len(raw)} bytes; the pickle declares {numel!r} {kind.name} elements "
                    f"of {dtype.itemsize} bytes (expected exactly {numel!r} x {dtype.itemsize} bytes)")
            self._storages[key] = _Storage(np.frombuffer(raw, dtype).astype(kind.dtype, copy=False), kind)
        return self._storages[key]


def _read_torch_zip(path: Path):
    """Unpickle `<prefix>/data.pkl` of a torch zip checkpoint with tensors as numpy arrays."""
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path}: not a PyTorch zip checkpoint (the format of torch>=1.6), or the file is truncated. "
            "Legacy-format files (torch<1.6) can only be read with torch installed: pip install 'vig[torch]'")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise ValueError(f"{path}: expected one '<name>/data.pkl' record in the zip, found "
                                 f"{pickles or 'none'}")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            big_endian = byteorder in archive.namelist() and archive.read(byteorder).strip() == b"big"
            with archive.open(pickles[0]) as fh:
                return _RestrictedUnpickler(fh, archive, prefix, big_endian).load()
    except pickle.UnpicklingError as err:  # ours (unsafe) or pickle's (corrupt): name the file
        raise type(err)(f"{path}: {err}") from None
    except (zipfile.BadZipFile, EOFError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{path}: corrupt or malformed checkpoint ({type(err).__name__}: {err})") from None


def _torch_to_numpy(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(obj, dict):
        return type(obj)((k, _torch_to_numpy(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_torch_to_numpy(v) for v in obj)
    return obj


def _read_with_torch(path: Path):
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path}: torch.load(weights_only=True) refused it: {err}. If this is a full training checkpoint, "
            "save just its weights with torch from a trusted copy: torch.save(ckpt['state_dict'], 'weights.pth')"
        ) from None
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: torch.load failed: {err}") from None
    return _torch_to_numpy(obj)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def load_torch_checkpoint(path, use_torch: bool | None = None):
    """Load a `.pth` without running pickled code; tensors become numpy arrays.

    use_torch: None picks torch.load(weights_only=True) when torch is installed, else the built-in
    restricted reader; True/False forces one of them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if use_torch is None:
        use_torch = torch_available()
    return _read_with_torch(path) if use_torch else _read_torch_zip(path)


def extract_state_dict(obj, source: str = "checkpoint", key: str | None = None) -> tuple[dict, str | None]:
    """The name -> array mapping inside a loaded checkpoint, and which wrapper key held it.

    Unwraps `key` (or the first of WRAPPER_KEYS present) when the top level is not itself a state dict,
    and strips a DDP `module.` prefix.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict of tensors at the top level, found {type(obj).__name__}")
    chosen = None
    if key is not None:
        if key not in obj:
            raise ValueError(f"{source}: no entry {key!r}; top-level keys: {', '.join(map(str, obj)) or '(none)'}")
        chosen = key
    elif not all(isinstance(v, np.ndarray) for v in obj.values()):
        chosen = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if chosen is None:
            raise ValueError(
                f"{source}: not a state dict and none of {', '.join(WRAPPER_KEYS)} holds one; top-level keys: "
                f"{', '.join(map(str, obj))}")
    state = obj[chosen] if chosen is not None else obj
    if not isinstance(state, dict):
        raise ValueError(f"{source}: entry {chosen!r} is a {type(state).__name__}, expected a dict of tensors")
    not_tensors = [repr(k) for k, v in state.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
    if not_tensors:
        raise ValueError(f"{source}: entries that are not tensors: {', '.join(not_tensors)}")
    stripped: dict[str, np.ndarray] = {}
    for name, value in state.items():
        short = name[len(DDP_PREFIX):] if name.startswith(DDP_PREFIX) else name
        if short in stripped:
            raise ValueError(f"{source}: both {short!r} and {name!r} are present")
        stripped[short] = value
    return stripped, chosen


# ----------------------------------------------------------------------------------------------
# Key mapping
# ----------------------------------------------------------------------------------------------
def batch_norm_modules(model_names, torch_names=()) -> set[str]:
    """Module paths that are BatchNorms in our model (moving_mean) or in the checkpoint (running_mean)."""
    return ({n.rsplit(".", 1)[0] for n in model_names if n.endswith(".moving_mean")}
            | {n.rsplit(".", 1)[0] for n in torch_names if n.endswith(".running_mean")})


def map_key(torch_name: str, bn_modules: set[str]) -> str | None:
    """Our parameter name for a key of the original's state dict; None for keys we drop."""
    module, _, leaf = torch_name.rpartition(".")
    if leaf in _DROPPED_SUFFIXES:
        return None
    if module in bn_modules and leaf in _BN_RENAMES:
        return f"{module}.{_BN_RENAMES[leaf]}"
    return torch_name


def convert_state_dict(state_dict: dict, expected_shapes: dict, source: str = "checkpoint",
                       target: str = "model") -> dict[str, np.ndarray]:
    """Rename a PyTorch ViG state dict to our parameter names, checking it against `expected_shapes`
    (our name -> shape). Returns float32 arrays; raises ConversionError listing every missing,
    unexpected, mis-shaped or non-float key at once."""
    bn_modules = batch_norm_modules(expected_shapes, state_dict)
    return fit_tensors(state_dict, expected_shapes, lambda name: map_key(name, bn_modules), source, target,
                       arch_hint="is --arch right?").params


# ----------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------
def _check_output_path(out_path: Path) -> None:
    if out_path.suffix != ".ckpt":
        raise ValueError(f"output {out_path} must end in .ckpt (MindSpore only loads that suffix)")
    if out_path.is_dir():
        raise ValueError(f"output {out_path} is a directory, expected a .ckpt file path")


def convert_checkpoint(in_path, out_path, arch: str, num_classes: int | None = None, key: str | None = None,
                       use_torch: bool | None = None, log=print, **overrides) -> dict:
    """Convert an original PyTorch ViG checkpoint into a MindSpore one for `create_model(arch, ...)`.

    num_classes defaults to the checkpoint's head size; `overrides` go to create_model (small
    variants). Returns a summary dict. Nothing is written unless every key fits.
    """
    import mindspore as ms

    from vig.models import create_model, model_entry

    start = time.time()
    in_path, out_path = Path(in_path), Path(out_path)
    try:
        model_entry(arch)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    _check_output_path(out_path)
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes={num_classes}: expected a positive number of classes")
    if not in_path.is_file():
        raise FileNotFoundError(f"checkpoint {in_path} does not exist")
    use_torch = torch_available() if use_torch is None else use_torch
    reader = "torch.load(weights_only=True)" if use_torch else "the restricted zip reader"
    log(f"[convert] reading {in_path} ({in_path.stat().st_size / 2**20:.1f} MiB) with {reader}")
    state, chosen = extract_state_dict(load_torch_checkpoint(in_path, use_torch), str(in_path), key)
    log(f"[convert] {len(state)} tensors" + (f" under {chosen!r}" if chosen else ""))
    if num_classes is None:
        num_classes = int(state[HEAD_BIAS].shape[0]) if HEAD_BIAS in state else 1000
        log(f"[convert] num_classes={num_classes} (from {HEAD_BIAS if HEAD_BIAS in state else 'the default'})")
    log(f"[convert] building {arch} (num_classes={num_classes})")
    model = create_model(arch, num_classes=num_classes, **overrides)
    target = f"{arch} (num_classes={num_classes})"
    params = convert_state_dict(state, model_shapes(model), str(in_path), target)
    _report_relative_pos(model, params, log)
    _load_into(model, params, target)
    log(f"[convert] writing {len(params)} parameters to {out_path}")
    save_checkpoint([{"name": n, "data": ms.Tensor(v)} for n, v in params.items()], out_path)
    summary = {"arch": arch, "num_classes": num_classes, "tensors_in": len(state), "parameters_out": len(params),
               "dropped": len(state) - len(params), "wrapper_key": chosen, "output": str(out_path),
               "seconds": round(time.time() - start, 2)}
    log(f"[convert] done in {summary['seconds']} s: {summary['parameters_out']} parameters, "
        f"{summary['dropped']} dropped (num_batches_tracked)")
    return summary


def _report_relative_pos(model, params: dict, log) -> None:
    """The released relative_pos buffers should equal the ones our model computes; say how far apart."""
    diffs = [float(np.abs(params[p.name] - p.asnumpy()).max()) for p in model.get_parameters()
             if p.name.endswith(".relative_pos")]
    if diffs:
        log(f"[convert] {len(diffs)} relative_pos buffers carried over; max |checkpoint - recomputed| = "
            f"{max(diffs):.3g}")


def _load_into(model, params: dict, target: str) -> None:
    """Let MindSpore itself accept every tensor before anything is written."""
    import mindspore as ms

    not_loaded, not_used = ms.load_param_into_net(
        model, {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in params.items()}, strict_load=True)
    if not_loaded or not_used:
        raise ConversionError(f"MindSpore refused parameters for {target}: not loaded {not_loaded}, "
                              f"unused {not_used}", not_loaded, not_used)


def build_parser() -> argparse.ArgumentParser:
    from .cli import Parser

    parser = Parser(
        prog="python -m vig.convert",
        description="Convert weights of the original PyTorch ViG (vig_pytorch) into a MindSpore checkpoint.")
    parser.add_argument("input", help="PyTorch checkpoint (.pth / .pth.tar) of the original code")
    parser.add_argument("output", help="MindSpore checkpoint to write (.ckpt)")
    parser.add_argument("--arch", required=True, help="model name, e.g. vig_ti_224_gelu or pvig_s_224_gelu")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="head size (default: read from the checkpoint's prediction.4.bias)")
    parser.add_argument("--key", default=None,
                        help=f"entry holding the weights in a wrapped checkpoint (default: first of "
                             f"{', '.join(WRAPPER_KEYS)})")
    return parser


def main(argv=None) -> int:
    from .cli import run_cli

    def convert(argv):
        args = build_parser().parse_args(argv)
        convert_checkpoint(args.input, args.output, args.arch, args.num_classes, args.key)

    return run_cli(convert, argv, prog="python -m vig.convert",
                   bad_input=(ValueError, FileNotFoundError, pickle.UnpicklingError))


if __name__ == "__main__":
    sys.exit(main())
