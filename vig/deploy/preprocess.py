"""The seed's 310 preprocessing: one float32 NCHW `.bin` per image and the label file.

Each `<file stem>.bin` holds (1, 3, S, S) float32, the output of THE eval transform
(`vig.data.eval_transforms`, the same object evaluation uses), so the deployed model sees exactly the
pixels the in-framework evaluation saw. The label file is the seed's `imagenet_label.json`:
`{"<file name with extension>": class index}`, class index = position in the sorted class names.
"""
from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..io import atomic_dir, write_json


def _duplicate_stems(paths: list[str]) -> list[str]:
    by_stem = defaultdict(list)
    for path in paths:
        by_stem[Path(path).stem].append(path)
    return [f"'{stem}': {', '.join(found)}" for stem, found in sorted(by_stem.items()) if len(found) > 1]


def preprocess_split(cfg: dict, data_url: str | os.PathLike, split: str, output_dir: str | os.PathLike,
                     labels_path: str | os.PathLike, progress_every: int = 1000, log=print) -> dict:
    """Write the .bin folder and the label file (both atomically); return {name: class index}."""
    from ..data import data_config, eval_transforms, list_images, load_rgb

    dcfg = data_config(cfg)
    split_dir = os.path.join(os.fspath(data_url), split)
    names, paths, labels = list_images(split_dir)
    if len(names) != dcfg["num_classes"]:
        raise ValueError(f"{split_dir} has {len(names)} class folders but num_classes = {dcfg['num_classes']} "
                         f"in the config")
    duplicates = _duplicate_stems(paths)
    if duplicates:
        raise ValueError(f"{split_dir}: file names (without extension) must be unique, the .bin and result "
                         f"files are named by them:\n  " + "\n  ".join(duplicates))
    transform = eval_transforms(dcfg["image_size"], dcfg["crop_pct"], dcfg["mean"], dcfg["std"],
                                dcfg["interpolation"])
    log(f"[preprocess] {split_dir}: {len(paths)} images, {len(names)} classes -> {output_dir} "
        f"(float32 1x3x{dcfg['image_size']}x{dcfg['image_size']} each)")
    start = time.monotonic()
    with atomic_dir(output_dir) as tmp:
        for done, path in enumerate(paths, 1):
            chw = transform(load_rgb(path))
            np.ascontiguousarray(chw[None], dtype=np.float32).tofile(tmp / f"{Path(path).stem}.bin")
            if done % progress_every == 0 or done == len(paths):
                rate = done / max(time.monotonic() - start, 1e-9)
                log(f"[preprocess] {done}/{len(paths)} images ({rate:.0f} images/s)")
    label_map = {os.path.basename(p): int(label) for p, label in zip(paths, labels)}
    write_json(labels_path, label_map)
    log(f"[preprocess] wrote {labels_path} ({len(label_map)} labels)")
    return label_map
