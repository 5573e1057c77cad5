"""Regenerate tests/data/timm_rand_augment.npz: timm's RandAugment operations applied to one 16x16 image.

Origin: timm's `timm/data/auto_augment.py` (`AugmentOp`: the level function that maps a magnitude to the
op's argument, then the PIL op), which the seed's `rand-m9-mstd0.5-inc1` names. Only that file is loaded
(by path), so timm needs neither torch nor torchvision here: `pip install --no-deps timm` is enough.

For every op of vig.data.rand_augment.OPS, at magnitudes 3 and 7, with the random sign of the signed ops
forced both ways (timm negates when random.random() > 0.5), prob 1, fill (124, 116, 104), bicubic:

    python tests/reference/timm_rand_augment.py            # writes the .npz
    python tests/reference/timm_rand_augment.py --check    # compares with the stored one

Arrays: "image" (the 16x16x3 uint8 input), "outputs" (N x 16x16x3, one compressed stream), "keys" (the N
"<op>/m<magnitude>/<+|->" names in that order), "versions" (timm and Pillow of the run, as JSON).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

OUTPUT = Path(__file__).resolve().parents[1] / "data" / "timm_rand_augment.npz"
MAGNITUDES = (3, 7)
FILL = (124, 116, 104)  # the ImageNet mean in 0..255, timm's img_mean for RandAugment
SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing",
          "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing")
# the op names of vig.data.rand_augment.OPS (listed here so the script runs without the project installed)
OP_NAMES = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "PosterizeIncreasing", "Solarize",
            "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing", "Contrast", "ContrastIncreasing",
            "Brightness", "BrightnessIncreasing", "Sharpness", "SharpnessIncreasing", "ShearX", "ShearY",
            "TranslateXRel", "TranslateYRel")


def golden_image() -> np.ndarray:
    """16x16 RGB: diagonal ramps in 40..200 (so AutoContrast/Equalize have work) plus seeded texture."""
    y, x = np.mgrid[0:16, 0:16].astype(np.float64)
    noise = np.random.default_rng(0).integers(-4, 5, (16, 16, 3))
    channels = np.stack([40 + 10 * x, 40 + 10 * y, 200 - 5 * (x + y)], -1) + noise
    return np.clip(channels, 0, 255).astype(np.uint8)


def golden_keys():
    """(key, op name, magnitude, negate) for every stored output."""
    for name in OP_NAMES:
        for magnitude in MAGNITUDES:
            for negate in ((False, True) if name in SIGNED else (False,)):
                yield f"{name}/m{magnitude}/{'-' if negate else '+'}", name, magnitude, negate


def _load_timm_auto_augment():
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("timm is not installed (pip install --no-deps timm)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "auto_augment.py"
    module_spec = importlib.util.spec_from_file_location("timm_auto_augment", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class _FixedRandom:
    """Stands in for the `random` module inside timm's auto_augment: random() returns a set value."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


def timm_outputs() -> tuple[dict, dict]:
    import importlib.metadata

    import PIL

    auto_augment = _load_timm_auto_augment()
    image = Image.fromarray(golden_image())
    hparams = {"img_mean": FILL, "interpolation": Image.Resampling.BICUBIC}
    outputs = {}
    for key, name, magnitude, negate in golden_keys():
        auto_augment.random = _FixedRandom(0.9 if negate else 0.1)  # > 0.5: timm negates
        op = auto_augment.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
        outputs[key] = np.asarray(op(image.copy()))
    versions = {"timm": importlib.metadata.version("timm"), "Pillow": PIL.__version__}
    return outputs, versions


def load_goldens(path=OUTPUT) -> tuple[dict, dict]:
    """({key: output}, versions) of the stored file."""
    with np.load(path) as stored:
        return dict(zip(stored["keys"].tolist(), stored["outputs"])), json.loads(str(stored["versions"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help=f"compare with {OUTPUT.name} instead of writing it")
    args = parser.parse_args()
    outputs, versions = timm_outputs()
    if args.check:
        stored, stored_versions = load_goldens()
        differ = [k for k in outputs if not np.array_equal(stored[k], outputs[k])]
        print(json.dumps({"compared": len(outputs), "differ": differ, "stored_with": stored_versions,
                          "now": versions}))
        return 1 if differ else 0
    sys.path.insert(0, str(OUTPUT.parents[2]))
    from vig.io import atomic_path  # stdlib only

    with atomic_path(OUTPUT) as tmp:  # the temp ends in .npz, so numpy writes it as named
        np.savez_compressed(tmp, image=golden_image(), keys=np.array(list(outputs)),
                            outputs=np.stack(list(outputs.values())), versions=np.array(json.dumps(versions)))
    print(f"wrote {OUTPUT} ({len(outputs)} outputs, {OUTPUT.stat().st_size} bytes, {versions})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
