"""ImageNet-format folders: `<split>/<class>/<image>`, class index = position in the sorted class names."""
import os

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

_listing_cache = {}  # split_dir -> (class mtimes, paths, labels); listing ImageNet takes seconds


def class_names(split_dir):
    """Sorted names of the class sub-folders of `split_dir` (hidden folders ignored)."""
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(f"image folder {split_dir} does not exist "
                                f"(expected <root>/train/<class>/* and <root>/val/<class>/*)")
    names = sorted(entry.name for entry in os.scandir(split_dir)
                   if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise ValueError(f"image folder {split_dir} has no class sub-folders (expected {split_dir}/<class>/<image>)")
    return names


def _image_files(class_dir):
    return sorted(entry.name for entry in os.scandir(class_dir)
                  if entry.is_file() and not entry.name.startswith(".")
                  and entry.name.lower().endswith(IMAGE_EXTENSIONS))


def list_images(split_dir):
    """(class names, file paths, int32 labels) of a split, sorted by class then file name."""
    names = class_names(split_dir)
    stamp = tuple(os.stat(os.path.join(split_dir, name)).st_mtime_ns for name in names)
    cached = _listing_cache.get(split_dir)
    if cached is not None and cached[0] == (names, stamp):
        return names, cached[1], cached[2]
    print(f"[data] listing {split_dir} ({len(names)} class folders)", flush=True)  # ImageNet: seconds
    paths, labels = [], []
    for index, name in enumerate(names):
        files = _image_files(os.path.join(split_dir, name))
        paths.extend(os.path.join(split_dir, name, f) for f in files)
        labels.extend([index] * len(files))
    if not paths:
        raise ValueError(f"image folder {split_dir} has {len(names)} class folders but no image files "
                         f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
    labels = np.asarray(labels, dtype=np.int32)
    _listing_cache[split_dir] = ((names, stamp), paths, labels)
    return names, paths, labels
