"""Dataset check before any training: an ImageNet-format folder in, a manifest out, or a list of problems.

Two phases, each listing every offender it finds:
1. layout (seconds even at ImageNet scale): every split exists, holds only class folders, no class is
   empty, train and val have the same classes, no two val files share a name stem (the 310 chain
   keys its results by `<stem>_0.bin`), and nothing would be skipped silently by the data readers
   (hidden entries, extensions outside vig.data.folder.IMAGE_EXTENSIONS);
2. files, in parallel: not zero-byte, an image format the readers decode, and intact.

Checking a file is cheap by default: `stat`, parse the header (format, size), and for JPEG/PNG look for
the end marker in the last 4 KiB; a file without it (the usual truncated download) is then decoded in
full to confirm. `full_decode=True` runs PIL `verify()` and a full `load()` on every image, which also
catches corrupt data inside complete files: the demo uses it; on ImageNet (1.28 M files) it costs
roughly an hour of CPU, so enable it there once, after a copy you do not trust.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# what PIL reports for the extensions the data readers list (vig.data.folder.IMAGE_EXTENSIONS);
# MPO is how PIL names some camera JPEGs
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "PPM", "TIFF", "WEBP")
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
TAIL_BYTES = 4096


class DatasetError(ValueError):
    """The dataset has problems; `problems` holds one 'path: reason' line per offender."""

    def __init__(self, root, problems: list[str], phase: str):
        self.problems = problems
        super().__init__(f"{root}: dataset check failed ({phase}), {len(problems)} problem(s):\n  "
                         + "\n  ".join(problems))


def _subdirs_and_files(folder: Path) -> tuple[list[str], list[str]]:
    dirs, files = [], []
    with os.scandir(folder) as it:
        for entry in it:
            (dirs if entry.is_dir() else files).append(entry.name)
    return sorted(dirs), sorted(files)


def _reader_problems(folder: Path, names: list[str], kind: str, extensions: tuple[str, ...]) -> list[str]:
    """Entries the data readers would skip silently: the manifest must count exactly what they read."""
    problems = []
    for name in names:
        if name.startswith("."):
            problems.append(f"{folder / name}: hidden {kind}; the data readers skip it (remove or rename it)")
        elif kind == "file" and not name.lower().endswith(extensions):
            problems.append(f"{folder / name}: file extension not read by the data readers "
                            f"(expected one of {' '.join(extensions)})")
    return problems


def scan_layout(root: Path, splits: tuple[str, ...]) -> tuple[dict, list[str]]:
    """{split: {class: [file names]}} and the layout problems."""
    from .data.folder import IMAGE_EXTENSIONS

    problems, tree = [], {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            problems.append(f"{split_dir}: missing split folder (expected {split}/<class>/<image files>)")
            continue
        classes, stray = _subdirs_and_files(split_dir)
        problems += [f"{split_dir / name}: file outside a class folder (expected {split}/<class>/{name})"
                     for name in stray]
        problems += _reader_problems(split_dir, classes, "folder", IMAGE_EXTENSIONS)
        classes = [c for c in classes if not c.startswith(".")]  # reported once, not again as a class
        if not classes:
            problems.append(f"{split_dir}: no class folders (expected {split}/<class>/<image files>)")
        tree[split] = {}
        for cls in classes:
            nested, files = _subdirs_and_files(split_dir / cls)
            problems += [f"{split_dir / cls / name}: unexpected folder inside a class folder (images must sit "
                         f"directly in {split}/{cls}/)" for name in nested]
            problems += _reader_problems(split_dir / cls, files, "file", IMAGE_EXTENSIONS)
            if not files:
                problems.append(f"{split_dir / cls}: empty class (no image files)")
            tree[split][cls] = files
    problems += _class_set_problems(root, tree)
    if "val" in tree:
        problems += _duplicate_stem_problems(root / "val", tree["val"])
    return tree, problems


def _class_set_problems(root: Path, tree: dict) -> list[str]:
    present = [s for s in tree if tree[s]]
    problems = []
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            only_a = sorted(set(tree[a]) - set(tree[b]))
            only_b = sorted(set(tree[b]) - set(tree[a]))
            if only_a:
                problems.append(f"{root / b}: missing class(es) present in {a}: {', '.join(only_a)}")
            if only_b:
                problems.append(f"{root / a}: missing class(es) present in {b}: {', '.join(only_b)}")
    return problems


def _duplicate_stem_problems(val_dir: Path, classes: dict) -> list[str]:
    by_stem = defaultdict(list)
    for cls, files in classes.items():
        for name in files:
            by_stem[os.path.splitext(name)[0]].append(f"{cls}/{name}")
    return [f"{val_dir}: file name '{stem}' occurs {len(paths)} times ({', '.join(paths)}); val file names "
            f"(without extension) must be unique, the 310 chain keys results by them"
            for stem, paths in sorted(by_stem.items()) if len(paths) > 1]


def inspect_file(task: tuple[str, bool]) -> tuple[str, int, int, int, str, str | None]:
    """(path, bytes, width, height, format, problem or None); runs in a worker process."""
    path, full_decode = task
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        return path, 0, 0, 0, "", f"cannot stat: {exc}"
    if size == 0:
        return path, 0, 0, 0, "", "zero-byte file"
    try:
        with Image.open(path) as im:
            fmt, (width, height) = im.format, im.size
            if fmt not in ACCEPTED_FORMATS:
                return path, size, width, height, fmt, \
                    f"unsupported image format {fmt} (expected one of {', '.join(ACCEPTED_FORMATS)})"
            if full_decode:
                im.verify()
        if full_decode or not _has_end_marker(path, size, fmt):
            with Image.open(path) as im:
                im.load()
    except UnidentifiedImageError:
        return path, size, 0, 0, "", "not an image (no known image header)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return path, size, 0, 0, "", f"undecodable or truncated image: {exc}"
    return path, size, width, height, fmt, None


def _has_end_marker(path: str, size: int, fmt: str) -> bool:
    marker = END_MARKERS.get(fmt)
    if marker is None:
        return True
    with open(path, "rb") as fh:
        fh.seek(max(0, size - TAIL_BYTES))
        return marker in fh.read()


def _size_stats(values: list[int]) -> dict:
    if not values:
        return {"min": None, "max": None, "mean": None}
    return {"min": min(values), "max": max(values), "mean": round(sum(values) / len(values), 3)}


def _run_checks(tasks, workers: int, progress_every: int, log):
    total, start = len(tasks), time.monotonic()

    def report(done):
        rate = done / max(time.monotonic() - start, 1e-9)
        log(f"[verify] {done}/{total} files checked ({rate:.0f} files/s, ETA {(total - done) / rate:.0f} s)")

    if workers <= 1:
        results = map(inspect_file, tasks)
        pool = None
    else:
        # forkserver, not fork: MindSpore (imported for the reader's extension list) runs native threads
        pool = multiprocessing.get_context("forkserver").Pool(workers)
        results = pool.imap_unordered(inspect_file, tasks, chunksize=256)
    try:
        for done, result in enumerate(results, 1):
            yield result
            if done % progress_every == 0 and done < total:
                report(done)
    finally:
        if pool is not None:
            pool.terminate()
    report(total)


def verify_dataset(root: str | os.PathLike, splits=("train", "val"), workers: int | None = None,
                   full_decode: bool = False, progress_every: int = 10000, log=print) -> dict:
    """Check the dataset and return its manifest; raise DatasetError listing every problem."""
    root = Path(root)
    splits = tuple(splits)
    if not splits or len(set(splits)) != len(splits):
        raise ValueError(f"splits={list(splits)}: expected one or more distinct split names")
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        expected = " and ".join(f"<root>/{split}/<class>/<image>" for split in splits)
        raise DatasetError(root, [f"{root}: dataset root {what} (expected {expected})"], "layout")
    workers = workers or os.cpu_count() or 1
    tree, problems = scan_layout(root, splits)
    if problems:
        raise DatasetError(root, problems, "layout")
    join = os.path.join  # plain strings: pathlib costs as much as the header check at 1.3 M files
    tasks = [(join(root, split, cls, name), full_decode)
             for split in splits for cls, files in tree[split].items() for name in files]
    log(f"[verify] {root}: {len(tasks)} files in {', '.join(splits)}; checking with {workers} worker(s), "
        f"{'full decode' if full_decode else 'header + end marker'}")
    records, problems = {}, []
    for path, size, width, height, fmt, problem in _run_checks(tasks, workers, progress_every, log):
        if problem:
            problems.append(f"{path}: {problem}")
        records[path] = (size, width, height, fmt)
    if problems:
        raise DatasetError(root, sorted(problems), "files")
    return _manifest(root, splits, tree, records, full_decode)


def _manifest(root: Path, splits, tree: dict, records: dict, full_decode: bool) -> dict:
    classes = sorted(tree[splits[0]])
    digest, formats = hashlib.sha256(), Counter()
    counts, sizes = {}, {}
    for split in splits:
        widths, heights = [], []
        for cls in classes:
            for name in tree[split][cls]:
                size, width, height, fmt = records[os.path.join(root, split, cls, name)]
                digest.update(f"{split}/{cls}/{name}\t{size}\n".encode())
                widths.append(width)
                heights.append(height)
                formats[fmt] += 1
        counts[split] = {"total": len(widths), "per_class": {cls: len(tree[split][cls]) for cls in classes}}
        sizes[split] = {"width": _size_stats(widths), "height": _size_stats(heights)}
    return {
        "root": str(root.resolve()),
        "splits": list(splits),
        "num_classes": len(classes),
        "classes": classes,
        "class_to_idx": {cls: i for i, cls in enumerate(classes)},
        "counts": counts,
        "image_size": sizes,
        "formats": dict(sorted(formats.items())),
        "digest": {"sha256": digest.hexdigest(),
                   "of": "sorted lines '<split>/<class>/<file>\\t<bytes>\\n' (splits in the order listed)"},
        "check": "full_decode" if full_decode else "header",
    }
