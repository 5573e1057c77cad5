"""Start a network from existing weights: one loader for every CLI (train, evaluate, export, summary).

    from vig.weights import load_weights
    report = load_weights(net, "vig_s.pth", allow_new_head=True)   # fine-tuning: fresh classifier

Reads a checkpoint written by this project (MindSpore .ckpt: train.py's --output_ckpt or a per-epoch
training state), an original PyTorch `.pth` (torch zip, read by vig.convert's restricted reader:
never unpickles code) or a checkpoint of the model-zoo port (its train.py's `model.`-prefixed names with
optimizer moments, or the bare names; onto `model_overrides: {graph: seed_port}`, the port's graph).
Which naming a file uses is told from its tensor names by the entries of FORMATS, each a
(detect, rename) pair, so another naming is one more entry added with `register_format`.

Loading is strict: every parameter of the network must come from the file with its shape, and every
tensor of the file must land (training bookkeeping such as optimizer moments excepted). Otherwise one
WeightsError lists the missing, unexpected and mis-shaped names with their shapes, before the caller
reads any data. The one allowed exception is fine-tuning: with `allow_new_head`, a classifier whose
class count differs from the file's starts fresh (one log line says so).
"""
from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .io import sha256_file

# The classifier's last layer (a 1x1 conv): `prediction.4` as in the original vig_pytorch, `head.3` in the
# model-zoo port's graph (vig/models/seed_port.py).
HEAD_NAMES = ("prediction.4.weight", "prediction.4.bias", "head.3.weight", "head.3.bias")
# training bookkeeping a project checkpoint may carry next to the weights (optimizer moments, EMA copies)
TRAINING_STATE_PREFIXES = ("adam_m.", "adam_v.", "moments.", "moment1.", "moment2.", "accum.", "ema.")
STATE_GROUPS = ("ema:", "net:")  # vig.train.checkpoint's per-epoch state: EMA weights first when present
MODEL_ROOTS = ("stem.", "backbone.", "prediction.")  # our modules, named after the original's
PORT_ROOTS = ("patch_embed.", "blocks.", "head.")  # the model-zoo port's modules (graph seed_port)
PORT_PREFIX = "model."  # the port checkpoints its NetWithLoss, whose attribute `model` is the network

LISTED = 40  # names shown per kind in an error (a wrong arch mismatches hundreds; the error keeps all)
Rename = Callable[[str], "str | None"]


class WeightsError(ValueError):
    """Weights that do not fit the network; lists every offending name with its shape."""

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


# ----------------------------------------------------------------------------------------------
# Formats: how a file names its tensors
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightFormat:
    """`detect(file names) -> bool`; `renamer(file names, model names) -> rename` where rename maps one
    file name to the model's name, or None for an entry that is not a weight (dropped, not an error)."""

    name: str
    detect: Callable[[list[str]], bool]
    renamer: Callable[[list[str], list[str]], Rename]


def is_training_state(name: str) -> bool:
    # model parameters live under a module path (`stem.convs.0.weight`) or are `pos_embed`;
    # dot-free names such as epoch_num, step_num, global_step, learning_rate are bookkeeping
    return name.startswith(TRAINING_STATE_PREFIXES) or ("." not in name and name != "pos_embed")


def _project_renamer(names, model_names) -> Rename:
    return lambda name: None if is_training_state(name) else name


def _state_renamer(names, model_names) -> Rename:
    group = next(g for g in STATE_GROUPS if any(n.startswith(g) for n in names))
    return lambda name: name[len(group):] if name.startswith(group) else None


def _torch_renamer(names, model_names) -> Rename:
    from .convert import batch_norm_modules, map_key

    bn_modules = batch_norm_modules(model_names, names)
    return lambda name: map_key(name, bn_modules)


def _unprefixed(name: str) -> str:
    return name[len(PORT_PREFIX):] if name.startswith(PORT_PREFIX) else name


def _is_port_format(names) -> bool:
    return any(_unprefixed(n).startswith(PORT_ROOTS) and n.endswith(".moving_mean") for n in names)


def _port_renamer(names, model_names) -> Rename:
    if not any(n.startswith(PORT_ROOTS) for n in model_names):
        raise WeightsError("these are weights of the model-zoo port's graph (patch_embed/blocks/head), which "
                           "computes something else than this network (the original's graph); build the port's "
                           "graph: add graph: seed_port to the config's model_overrides, e.g. model_overrides: "
                           "{graph: seed_port} (on the command line --model_overrides '{graph: seed_port}', "
                           "which replaces the config's model_overrides)")
    return lambda name: None if is_training_state(name) else _unprefixed(name)


FORMATS: list[WeightFormat] = [
    WeightFormat("project training state", lambda names: any(n.startswith("net:") for n in names), _state_renamer),
    # the port's train.py checkpoints (`model.` + optimizer moments + loss-scale and step bookkeeping), its
    # export-style files without the prefix, and this project's checkpoints of the port's graph
    WeightFormat("model-zoo port (research/cv/ViG)", _is_port_format, _port_renamer),
    WeightFormat("original PyTorch (vig_pytorch)",
                 lambda names: any(n.endswith((".running_mean", ".num_batches_tracked")) for n in names),
                 _torch_renamer),
    WeightFormat("project", lambda names: any(n.startswith(MODEL_ROOTS) and n.endswith(".moving_mean")
                                              for n in names), _project_renamer),
]


def register_format(fmt: WeightFormat) -> None:
    """Add a naming, tried before the built-in ones (a specific detect should not lose to a broad one)."""
    FORMATS.insert(0, fmt)


def detect_format(names: Iterable[str], source: str = "weights") -> WeightFormat:
    names = list(names)
    for fmt in FORMATS:
        if fmt.detect(names):
            return fmt
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    raise WeightsError(f"{source}: cannot tell whose weights these are from their {len(names)} names ({shown}); "
                       f"known: {', '.join(f.name for f in FORMATS)}")


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a weights file (cached per path, size and mtime: hashed once per process)."""
    stat = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def describe(path: str | os.PathLike) -> dict:
    """Where weights came from, as the summary and report show it."""
    return {"path": str(path), "sha256": file_sha256(path)}


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """name -> array of a weights file, and which reader read it. A zip is a PyTorch file (read without
    unpickling code); anything else must be a MindSpore checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if zipfile.is_zipfile(path):
        from .convert import extract_state_dict, load_torch_checkpoint

        state, chosen = extract_state_dict(load_torch_checkpoint(path), str(path))
        return state, "PyTorch zip" + (f" (under {chosen!r})" if chosen else "")
    import mindspore as ms

    try:
        saved = ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError, OSError, TypeError) as exc:
        raise WeightsError(f"{path}: neither a PyTorch zip file nor a readable MindSpore checkpoint "
                           f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
                           ) from None
    return {name: p.asnumpy() for name, p in saved.items()}, "MindSpore checkpoint"


# ----------------------------------------------------------------------------------------------
# Fitting names and shapes
# ----------------------------------------------------------------------------------------------
def shape_str(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _layout(named_shapes: dict, what: str) -> str:
    """pos_embed shape and backbone length: enough to tell the ViG variants apart."""
    pos = named_shapes.get("pos_embed")
    pos = shape_str(getattr(pos, "shape", pos)) if pos is not None else "none"
    depth = len({n.split(".")[1] for n in named_shapes if n.startswith("backbone.")})
    return f"{what} has pos_embed {pos} and {depth} backbone entries"


@dataclass
class Fitted:
    params: dict[str, np.ndarray]            # model name -> float32 array, ready to load
    fresh: dict[str, tuple] = field(default_factory=dict)  # model name left at its initial value -> file shape
    dropped: int = 0                          # file entries that are not weights (bookkeeping)
    dropped_kinds: dict[str, int] = field(default_factory=dict)  # "adam_m.*" or a dot-free name -> count


def fit_tensors(state: dict, expected_shapes: dict, rename: Rename, source: str = "weights",
                target: str = "model", may_differ: Iterable[str] = (),
                arch_hint: str = "is the config's arch right?") -> Fitted:
    """Rename `state` to the model's names and check it against `expected_shapes` (model name -> shape).

    Names in `may_differ` may have another shape in the file; they are then left out (`fresh`).
    Raises WeightsError listing every missing, unexpected, mis-shaped or non-float tensor at once.
    """
    may_differ = set(may_differ)
    fitted, origin = Fitted({}), {}
    unexpected, mismatched = [], []
    for file_name, value in state.items():
        name = rename(file_name)
        if name is None:
            fitted.dropped += 1
            kind = file_name.split(".", 1)[0] + (".*" if "." in file_name else "")
            fitted.dropped_kinds[kind] = fitted.dropped_kinds.get(kind, 0) + 1
            continue
        arrow = file_name if name == file_name else f"{file_name} -> {name}"
        if name in origin:
            unexpected.append(f"{arrow} {shape_str(value.shape)} (duplicate: {origin[name]} maps there too)")
        elif name not in expected_shapes:
            unexpected.append(f"{arrow} {shape_str(value.shape)}")
        elif tuple(value.shape) != tuple(expected_shapes[name]):
            if name in may_differ:
                fitted.fresh[name] = tuple(value.shape)
            else:
                mismatched.append(f"{arrow}: expected {shape_str(expected_shapes[name])}, "
                                  f"found {shape_str(value.shape)}")
        elif value.dtype.kind != "f":
            mismatched.append(f"{arrow}: expected a floating tensor, found {value.dtype}")
        else:
            fitted.params[name] = value.astype(np.float32, copy=False)
        origin.setdefault(name, file_name)
    missing = [f"{n} {shape_str(s)}" for n, s in expected_shapes.items() if n not in origin]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit {target}: {len(missing)} missing, {len(unexpected)} unexpected, "
                 f"{len(mismatched)} mis-shaped key(s)"]
        if len(missing) + len(mismatched) > len(expected_shapes) // 4:
            lines.append(f"  most keys do not fit; {arch_hint} " + _layout(state, "checkpoint") + "; "
                         + _layout(expected_shapes, target))
        for title, items in (("missing (in the model, not in the checkpoint)", missing),
                             ("unexpected (in the checkpoint, not in the model)", unexpected),
                             ("mis-shaped or wrong type", mismatched)):
            if items:
                lines.append(f"  {title}:")
                lines += [f"    {item}" for item in items[:LISTED]]
                if len(items) > LISTED:
                    lines.append(f"    ... and {len(items) - LISTED} more")
        raise WeightsError("\n".join(lines), missing, unexpected, mismatched)
    return fitted


# ----------------------------------------------------------------------------------------------
# Into a network
# ----------------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    path: str
    sha256: str
    format: str
    reader: str
    loaded: int
    fresh: dict[str, tuple]
    dropped: int


def model_shapes(net) -> dict[str, tuple]:
    """Every weight of a network (trainable, BN statistics, frozen buffers) -> shape; not the training
    step's drop-path noise buffer, which is no weight."""
    from .train.step import NOISE_NAME

    return {p.name: tuple(p.shape) for p in net.get_parameters() if p.name != NOISE_NAME}


def fit_file(path: str | os.PathLike, expected_shapes: dict, allow_new_head: bool = False,
             target: str = "model") -> tuple[Fitted, WeightFormat, str]:
    """Read `path`, tell its format, fit it to `expected_shapes` (WeightsError when it does not)."""
    state, reader = read_tensors(path)
    fmt = detect_format(state, str(path))
    rename = fmt.renamer(list(state), list(expected_shapes))
    fitted = fit_tensors(state, expected_shapes, rename, f"{path} ({fmt.name})", target,
                         HEAD_NAMES if allow_new_head else ())
    return fitted, fmt, reader


def load_weights(net, path: str | os.PathLike, allow_new_head: bool = False, log=print,
                 tag: str = "[weights]", target: str | None = None) -> LoadReport:
    """Load the weights in `path` into `net` strictly (see the module doc); returns what it did.

    allow_new_head: fine-tuning. A classifier whose class count differs from the file's keeps its
    initial values; every other weight must still load.
    """
    import mindspore as ms

    expected = model_shapes(net)
    target = target or f"{type(net).__name__} ({len(expected)} weights)"
    fitted, fmt, reader = fit_file(path, expected, allow_new_head, target)
    by_name = {p.name: p for p in net.get_parameters()}
    for name, value in fitted.params.items():
        param = by_name[name]
        param.set_data(ms.Tensor(value, dtype=param.dtype))
    sha = file_sha256(path)
    log(f"{tag} loaded {len(fitted.params)} tensors from {path} ({fmt.name}, {reader}; sha256 {sha[:16]})"
        + (f"; {fitted.dropped} non-weight entries ignored ({_kinds(fitted.dropped_kinds)})" if fitted.dropped
           else ""))
    if fitted.fresh:
        head, file_shape = next(iter(fitted.fresh.items()))
        log(f"{tag} fine-tuning: {path} has {file_shape[0]} classes, the network "
            f"{expected[head][0]}; the classifier's last layer ({head.rsplit('.', 1)[0]}) starts fresh")
    return LoadReport(str(path), sha, fmt.name, reader, len(fitted.params), fitted.fresh, fitted.dropped)


def _kinds(counts: dict[str, int]) -> str:
    """'adam_m.* x118, adam_v.* x118, global_step, ...': what was skipped, the largest groups first."""
    shown = [kind + (f" x{n}" if n > 1 else "") for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else "")


def add_pretrained_argument(parser, required_help: str = "", aliases=()) -> None:
    """`--pretrained PATH` (the seed's key), with `aliases` such as the older --checkpoint."""
    parser.add_argument("--pretrained", *aliases, dest="pretrained", metavar="WEIGHTS",
                        help="weights to start from: a checkpoint of this project (.ckpt), an original PyTorch "
                             ".pth (read without unpickling code) or a model-zoo port .ckpt (with model_overrides "
                             "{graph: seed_port}); default: the config's 'pretrained' key"
                             + required_help)


def pretrained_path(args, cfg: dict, required: bool, flag: str = "--pretrained") -> str | None:
    """The weights a CLI starts from: the flag, else the config's `pretrained`; checked to exist.
    Sets cfg["pretrained"] so the training hash and the workers see the same file."""
    path = args.pretrained or cfg.get("pretrained")
    if path is None:
        if required:
            raise WeightsError(f"no weights given: pass {flag} WEIGHTS or set 'pretrained' in the config")
        return None
    source = flag if args.pretrained else "config key 'pretrained' ="
    if not Path(path).is_file():
        raise WeightsError(f"{source} {path}: weights file not found")
    cfg["pretrained"] = str(path)
    return str(path)
