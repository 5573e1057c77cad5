"""Resumable training state: one MindSpore checkpoint per epoch plus a JSON manifest, both atomic.

Layout under `<state_root>/<training_hash(cfg)>/`:
  state-e0003.ckpt   every parameter of model ("net:"), optimizer ("opt:"), EMA ("ema:") and loss
                     scaler ("scaler:"), with epoch, global step, config hash and metrics appended
  state-e0003.json   manifest written after the checkpoint: sha256 + size of the .ckpt, epoch, hash.
A state counts only when its manifest exists and the checkpoint matches it, so a crash while writing
(or a truncated/corrupt file) is detected and the previous state is used instead.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..io import save_checkpoint, write_json

STATE_RE = re.compile(r"^state-e(\d{4,})\.ckpt$")
GROUPS = ("net", "opt", "ema", "scaler")


class StateError(RuntimeError):
    """A training state that cannot be used (corrupt, truncated, or from another configuration)."""


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def save_state(folder: Path, epoch: int, config_hash: str, groups: dict, extra: dict) -> Path:
    """Write state-e<epoch>.ckpt then its manifest, atomically. `groups`: {group: {name: Parameter}}."""
    entries = [{"name": f"{group}:{name}", "data": param}
               for group in GROUPS for name, param in groups.get(group, {}).items()]
    ckpt = state_path(folder, epoch)
    append = {"epoch": int(epoch), "config_hash": config_hash}
    save_checkpoint(entries, ckpt, append_dict=append)
    manifest = {"epoch": int(epoch), "config_hash": config_hash, "size": ckpt.stat().st_size,
                "sha256": sha256_file(ckpt), **extra}
    write_json(manifest_path(ckpt), manifest)
    return ckpt


def load_state(info: StateInfo, groups: dict) -> dict:
    """Copy a verified state into the live parameters; returns the `extra` dict saved with it."""
    import mindspore as ms

    try:
        data = ms.load_checkpoint(str(info.path))
    except Exception as exc:  # noqa: BLE001 - MindSpore raises several types for a bad file
        raise StateError(f"{info.path}: cannot be read by MindSpore ({exc})") from None
    missing = []
    for group, params in groups.items():
        for name, param in params.items():
            key = f"{group}:{name}"
            if key not in data:
                missing.append(key)
                continue
            param.set_data(ms.Tensor(data[key].asnumpy()).astype(param.dtype))
    if missing:
        raise StateError(f"{info.path}: lacks {len(missing)} entries of the current run, e.g. {missing[:3]}")
    return {k: v for k, v in info.manifest.items() if k not in ("sha256", "size")}


def prune_states(folder: Path, keep_last: int, keep_epochs: set[int]) -> None:
    """Delete all but the newest `keep_last` states, sparing the epochs in `keep_epochs` (the best)."""
    for index, path in enumerate(list_states(folder)):
        epoch = int(STATE_RE.match(path.name).group(1))
        if index < keep_last or epoch in keep_epochs:
            continue
        for victim in (path, manifest_path(path)):
            with contextlib.suppress(FileNotFoundError):
                victim.unlink()
