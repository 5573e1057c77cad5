"""Resumable training state: one MindSpore checkpoint per epoch plus a JSON manifest, both atomic.

Layout under `<state_root>/<training_hash(cfg)>/`:
  state-e0003.ckpt   every parameter of model ("net:"), optimizer ("opt:"), EMA ("ema:") and loss
                     scaler ("scaler:"), with epoch, global step, config hash and metrics appended
  state-e0003.json   manifest written after the checkpoint: sha256 + size of the .ckpt, epoch, hash.
  trainer.lock       held (flock) by the trainer writing here: "pid N on HOST since TIME"
  best.ckpt          the best validation epoch's weights (EMA when on), with best.json naming the epoch;
                     written when an epoch beats the previous best, before that epoch's state.
A state counts only when its manifest exists and the checkpoint matches it, so a crash while writing
(or a truncated/corrupt file) is detected and the previous state is used instead. A full disk stops
training with one line saying how much space the next state needs, before it is written if possible.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ..io import save_checkpoint, sha256_file, write_json

STATE_RE = re.compile(r"^state-e(\d{4,})\.ckpt$")
GROUPS = ("net", "opt", "ema", "scaler")
LOCK_FILE = "trainer.lock"
MANIFEST_ALLOWANCE = 1 << 20  # room for the manifest (it carries the metrics history) and file-system slack


class StateError(RuntimeError):
    """A training state that cannot be used (corrupt, truncated, or from another configuration)."""


class DiskFullError(StateError):
    """The next state does not fit on the disk; the previous one is intact."""


@dataclass
class StateInfo:
    path: Path
    epoch: int            # epochs completed
    config_hash: str
    manifest: dict


def state_dir(state_root: str | os.PathLike, config_hash: str) -> Path:
    return Path(state_root) / config_hash


def state_path(folder: Path, epoch: int) -> Path:
    return folder / f"state-e{epoch:04d}.ckpt"


def manifest_path(ckpt: Path) -> Path:
    return ckpt.with_suffix(".json")


def read_manifest(ckpt: Path) -> dict:
    """The manifest of a state checkpoint; StateError when missing or unreadable."""
    man = manifest_path(ckpt)
    try:
        with open(man) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise StateError(f"{ckpt}: no manifest {man.name} (the state was never completed)") from None
    except (OSError, ValueError) as exc:
        raise StateError(f"{man}: unreadable manifest ({exc})") from None
    for key in ("sha256", "size", "epoch", "config_hash"):
        if key not in data:
            raise StateError(f"{man}: manifest lacks '{key}'")
    return data


def verify_state(ckpt: Path) -> StateInfo:
    """Check a state file against its manifest (size, then sha256)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise StateError(f"{ckpt}: state file not found")
    manifest = read_manifest(ckpt)
    size = ckpt.stat().st_size
    if size != manifest["size"]:
        raise StateError(f"{ckpt}: truncated or altered ({size} bytes, manifest says {manifest['size']})")
    if sha256_file(ckpt) != manifest["sha256"]:
        raise StateError(f"{ckpt}: corrupt (sha256 differs from its manifest)")
    return StateInfo(ckpt, int(manifest["epoch"]), manifest["config_hash"], manifest)


def list_states(folder: Path) -> list[Path]:
    """State checkpoints in `folder`, newest epoch first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := STATE_RE.match(name))]
    return [path for _, path in sorted(found, reverse=True)]


def check_config_hash(info_hash: str, expected: str, path: Path) -> None:
    if info_hash != expected:
        raise StateError(
            f"{path}: refusing to resume: the state was trained with config hash {info_hash}, the current "
            f"config hashes to {expected} (a different experiment). Resume with the config it was made with, "
            f"or start fresh with --resume none")


def pick_resume_state(mode: str, folder: Path, config_hash: str, log=print) -> StateInfo | None:
    """`none` -> None; `auto` -> newest valid state in `folder` (corrupt ones reported and skipped);
    a path -> that state, verified, refused if its config hash differs."""
    if mode == "none":
        return None
    if mode != "auto":
        info = verify_state(Path(mode))
        check_config_hash(info.config_hash, config_hash, info.path)
        return info
    for path in list_states(folder):
        try:
            info = verify_state(path)
        except StateError as exc:
            log(f"[resume] WARNING: {exc}; trying the previous state")
            continue
        check_config_hash(info.config_hash, config_hash, info.path)
        return info
    return None


def lock_state_folder(folder: Path):
    """Hold `folder` for this trainer until the returned handle is closed or the process dies (flock:
    the kernel releases it however the process ends). A second trainer is refused at once, naming the
    holder. Temp files found here belong to a writer that died (none can run without the lock): removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.fdopen(os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "a trainer that is just starting"
        handle.close()
        raise StateError(f"{folder}: another trainer is using this state folder ({holder}); two trainers on one "
                         f"state would overwrite each other: stop it, or wait for it to end") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
    handle.flush()
    for stale in folder.glob(".state-e*.tmp*"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    return handle


def disk_full_message(folder: Path, epoch: int, needed: int, free: int) -> str:
    return (f"{folder}: disk full: the epoch-{epoch} state needs about {needed} bytes ({needed / 2**20:.1f} MiB), "
            f"{free} bytes ({free / 2**20:.1f} MiB) are free; the previous state is kept, and after freeing space "
            f"`--resume auto` continues from the last complete state")


def _entries(groups: dict) -> list[dict]:
    return [{"name": f"{group}:{name}", "data": param}
            for group in GROUPS for name, param in groups.get(group, {}).items()]


def ensure_room_for_state(folder: Path, epoch: int | None = None, groups: dict | None = None) -> int:
    """DiskFullError unless `folder`'s disk can hold the next state (epoch `epoch`, default the newest
    state's + 1): as large as the last one or, before the first, the bytes of `groups`' parameters,
    plus its manifest. Returns the bytes it counted on (0 when there is nothing to go by yet)."""
    folder.mkdir(parents=True, exist_ok=True)
    states = list_states(folder)
    if states:
        size = states[0].stat().st_size
        epoch = epoch or int(STATE_RE.match(states[0].name).group(1)) + 1
    elif groups:
        size = sum(int(e["data"].nbytes) for e in _entries(groups))
    else:
        return 0
    needed, free = size + MANIFEST_ALLOWANCE, shutil.disk_usage(folder).free
    if free < needed:
        raise DiskFullError(disk_full_message(folder, epoch or 1, needed, free))
    return needed


def save_state(folder: Path, epoch: int, config_hash: str, groups: dict, extra: dict) -> Path:
    """Write state-e<epoch>.ckpt then its manifest, atomically. `groups`: {group: {name: Parameter}}.
    DiskFullError (one line) when the disk cannot hold it: checked before writing, and caught while writing."""
    needed = ensure_room_for_state(folder, epoch, groups)
    entries = _entries(groups)
    ckpt = state_path(folder, epoch)
    append = {"epoch": int(epoch), "config_hash": config_hash}
    try:
        save_checkpoint(entries, ckpt, append_dict=append)
        manifest = {"epoch": int(epoch), "config_hash": config_hash, "size": ckpt.stat().st_size,
                    "sha256": sha256_file(ckpt), **extra}
        write_json(manifest_path(ckpt), manifest)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        with contextlib.suppress(FileNotFoundError):
            ckpt.unlink()  # without its manifest it is no state; give its space back
        raise DiskFullError(disk_full_message(folder, epoch, needed, shutil.disk_usage(folder).free)) from None
    return ckpt


def load_state(info: StateInfo, groups: dict) -> dict:
    """Copy a verified state into the live parameters; returns the `extra` dict saved with it."""
    import mindspore as ms

    try:
        data = ms.load_checkpoint(str(info.path))
    except Exception as exc:  # noqa: BLE001 - MindSpore raises several types for a bad file
        raise StateError(f"{info.path}: cannot be read by MindSpore ({exc})") from None
    live = {f"{group}:{name}": param for group, params in groups.items() for name, param in params.items()}
    missing = [key for key in live if key not in data]
    if missing:
        raise StateError(f"{info.path}: lacks {len(missing)} entries of the current run, e.g. {missing[:3]}")
    reshaped = [f"{key} {tuple(data[key].shape)} vs {tuple(param.shape)}" for key, param in live.items()
                if tuple(data[key].shape) != tuple(param.shape)]
    if reshaped:  # e.g. the learning-rate schedule, one entry per step: another rank count changes its length
        raise StateError(f"{info.path}: {len(reshaped)} entries differ in shape from this run (state vs run), "
                         f"e.g. {reshaped[:2]}; was it written by a job with another number of ranks?")
    for key, param in live.items():
        param.set_data(ms.Tensor(data[key].asnumpy()).astype(param.dtype))
    return {k: v for k, v in info.manifest.items() if k not in ("sha256", "size")}


def prune_states(folder: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` (>= 1) states: the newest, which resume needs, always stays.
    The best epoch's weights live in best.ckpt, which pruning never touches."""
    for path in list_states(folder)[max(keep_last, 1):]:
        for victim in (path, manifest_path(path)):
            with contextlib.suppress(FileNotFoundError):
                victim.unlink()


BEST_NAME = "best.ckpt"


def write_weights(path: str | os.PathLike, params: dict) -> Path:
    """{name: Parameter/Tensor} as a MindSpore .ckpt with those names (the model's), atomically."""
    return save_checkpoint([{"name": name, "data": p} for name, p in params.items()], path)


def save_best(folder: Path, best: dict, params: dict) -> Path:
    """The best epoch's weights (model parameter names) then best.json naming epoch and top-1, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / BEST_NAME
    write_weights(ckpt, params)
    write_json(manifest_path(ckpt), {"epoch": int(best["epoch"]), "top1": best["top1"], "size": ckpt.stat().st_size,
                                     "sha256": sha256_file(ckpt)})
    return ckpt


def load_best(folder: Path, best: dict) -> dict:
    """{name: Tensor} of best.ckpt, checked against its manifest and the epoch the run's state calls best."""
    import mindspore as ms

    ckpt = folder / BEST_NAME
    if best.get("epoch") is None:
        raise StateError(f"{folder}: final_weights best, but no epoch has been validated")
    try:
        manifest = json.loads(manifest_path(ckpt).read_text())
    except (OSError, ValueError) as exc:
        raise StateError(f"{ckpt}: the best epoch's weights are missing or unreadable ({exc}); they are written "
                         f"during training, so rerun with --resume none") from None
    if manifest.get("epoch") != best["epoch"] or ckpt.stat().st_size != manifest.get("size") \
            or sha256_file(ckpt) != manifest.get("sha256"):
        raise StateError(f"{ckpt}: holds epoch {manifest.get('epoch')} (or differs from its manifest), but the "
                         f"run's best epoch is {best['epoch']}; rerun with --resume none")
    return ms.load_checkpoint(str(ckpt))
