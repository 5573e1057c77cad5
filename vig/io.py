"""File output in one place: every file or folder appears complete or not at all.

A temp file/folder is made next to the target (same filesystem), flushed to disk and moved in with
`os.replace`. On any failure (an exception, Ctrl-C, a full disk) the temp is removed together with any
file a writer derived from its name (MindSpore's `save_checkpoint` writes `<name>.tmp` itself, then
renames), so an interrupted step leaves neither a half-written output nor a stray temp file.

JSON is written in one format: UTF-8, indented, keys in insertion order, a final newline.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

JSON_INDENT = 2


def json_text(obj, indent: int = JSON_INDENT) -> str:
    """The project's JSON format (what `write_json` writes and the benches print)."""
    return json.dumps(obj, indent=indent) + "\n"


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _remove_temp(tmp: Path) -> None:
    """The temp and whatever a writer made from its name (`.x.<random>.tmp.ckpt` -> `.x.<random>.tmp.tmp`)."""
    base = tmp.name[: -len(tmp.suffix)] if tmp.suffix else tmp.name
    for leftover in glob.glob(glob.escape(str(tmp.parent / base)) + "*"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, create: bool = True, mode: int = 0o644):
    """Yield a temp path next to `path` (same extension: some writers choose the format by it); on
    success it replaces `path` with permissions `mode`. `create=False`: the temp does not exist yet,
    for writers that refuse to overwrite a file (MindSpore)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    if not create:
        tmp.unlink()
    try:
        yield tmp
        os.chmod(tmp, mode)  # mkstemp makes 0600 and MindSpore 0400: the next run may have to replace it
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove_temp(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj, indent: int = JSON_INDENT) -> Path:
    """`obj` as JSON; an unserialisable value fails before anything is written."""
    return write_text(path, json_text(obj, indent))


def write_jsonl(path: str | os.PathLike, records) -> Path:
    """One compact JSON object per line."""
    return write_text(path, "".join(json.dumps(record) + "\n" for record in records))


def save_checkpoint(entries, path: str | os.PathLike, **kwargs) -> Path:
    """`mindspore.save_checkpoint(entries, ...)` onto `path` atomically (kwargs passed through)."""
    import mindspore as ms

    with atomic_path(path, create=False) as tmp:  # same suffix: MindSpore appends .ckpt to names without it
        ms.save_checkpoint(entries, str(tmp), **kwargs)
    return Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temp folder next to `path`; on success it replaces `path` (an old folder is removed only
    after the new one is in place, so a failure keeps whatever was there before)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise FileExistsError(f"{path}: exists and is not a folder; remove it first")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str | os.PathLike, what: str, required: tuple[str, ...] = ()) -> dict:
    """Load a JSON object; errors name the file, what it should be and the missing keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: {what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"{path}: {what} lacks key(s) {', '.join(missing)} (expected: {', '.join(required)})")
    return obj
