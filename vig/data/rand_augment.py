"""timm-style RandAugment on PIL images, driven by an explicit numpy Generator (so it is reproducible).

Semantics follow timm's `rand_augment_transform` (the seed's `rand-m9-mstd0.5-inc1`): `n` ops per image
drawn uniformly with replacement, each applied with probability 0.5, magnitude ~ N(m, mstd) clipped to
[0, mmax] (mmax defaults to 10; mstd > 100 means uniform in [0, m]), `inc1` selects the "increasing"
op set whose strength grows with the magnitude. Two deliberate differences from timm: `inc0` selects
the default op set (timm tests `bool("0")`, which is True), and `m`/`mmax` may be fractional.
MindSpore's own `vision.RandAugment` differs (31 bins, no magnitude noise, other op set), hence this
module.
"""
import math
import re
from dataclasses import dataclass

from PIL import Image, ImageEnhance, ImageOps

LEVEL_DENOM = 10.0  # magnitude scale: 10 = the strongest setting of every op
TRANSLATE_PCT = 0.45  # TranslateXRel/YRel: max shift as a fraction of the image side (timm default)
UNIFORM_MSTD = 100.0  # timm: mstd above this means "magnitude uniform in [0, m]"

_SECTION = re.compile(r"^([a-z]+)(\d+(?:\.\d*)?)$")
_KEYS = {
    "n": "ops per image (integer >= 0)",
    "m": "magnitude (>= 0, 10 = strongest)",
    "mstd": "magnitude std (>= 0; > 100 = uniform in [0, m])",
    "mmax": "magnitude upper clip (> 0, default 10)",
    "inc": "1 = increasing op set, 0 = timm's default set",
}


@dataclass(frozen=True)
class RandAugmentSpec:
    """A parsed RandAugment string; defaults are timm's."""

    num_ops: int = 2
    magnitude: float = LEVEL_DENOM
    magnitude_std: float = 0.0
    magnitude_max: float = LEVEL_DENOM
    increasing: bool = False
    prob: float = 0.5
    text: str = ""


def _bad(text, why):
    keys = "; ".join(f"{k}: {v}" for k, v in _KEYS.items())
    return ValueError(f"auto_augment = {text!r}: {why}. Expected a timm RandAugment string "
                      f"'rand-<key><value>-...' such as 'rand-m9-mstd0.5-inc1' with keys {keys}; "
                      f"or null/'' for none")


def parse_rand_augment(text):
    """Parse 'rand-m9-mstd0.5-inc1' into a RandAugmentSpec; None, '' or 'none' mean no RandAugment.

    Anything this implementation cannot honour (AutoAugment policies, AugMix, op weights 'w', unknown or
    repeated sections) raises ValueError naming the string.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise _bad(text, "not a string")
    stripped = text.strip()
    if stripped.lower() in ("", "none"):
        return None
    head, *sections = stripped.split("-")
    if head != "rand":
        raise _bad(text, f"policy {head!r} is not supported (only timm RandAugment, 'rand-...')")
    values = {}
    for section in sections:
        match = _SECTION.match(section)
        if not match:
            raise _bad(text, f"cannot parse section {section!r}")
        key, value = match.groups()
        if key == "w":
            raise _bad(text, "op weighting ('w') is not implemented")
        if key not in _KEYS:
            raise _bad(text, f"unknown section {section!r}")
        if key in values:
            raise _bad(text, f"section {key!r} given twice")
        values[key] = float(value)
    spec = {}
    if "n" in values:
        if not values["n"].is_integer():
            raise _bad(text, f"n must be an integer, got {values['n']}")
        spec["num_ops"] = int(values["n"])
    if "m" in values:
        spec["magnitude"] = values["m"]
    if "mstd" in values:
        spec["magnitude_std"] = math.inf if values["mstd"] > UNIFORM_MSTD else values["mstd"]
    if "mmax" in values:
        if values["mmax"] <= 0:
            raise _bad(text, "mmax must be > 0")
        spec["magnitude_max"] = values["mmax"]
    if "inc" in values:
        if values["inc"] not in (0.0, 1.0):
            raise _bad(text, f"inc must be 0 or 1, got {values['inc']:g}")
        spec["increasing"] = values["inc"] == 1.0
    return RandAugmentSpec(text=stripped, **spec)


# --- image ops (arguments already resolved from the magnitude) -------------------------------------

def _affine(img, matrix, fill, resample):
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)


def _shear_x(img, factor, fill, resample):
    return _affine(img, (1, factor, 0, 0, 1, 0), fill, resample)


def _shear_y(img, factor, fill, resample):
    return _affine(img, (1, 0, 0, factor, 1, 0), fill, resample)


def _translate_x_rel(img, pct, fill, resample):
    return _affine(img, (1, 0, pct * img.size[0], 0, 1, 0), fill, resample)


def _translate_y_rel(img, pct, fill, resample):
    return _affine(img, (1, 0, 0, 0, 1, pct * img.size[1]), fill, resample)


def _rotate(img, degrees, fill, resample):
    return img.rotate(degrees, resample=resample, fillcolor=fill)


def _auto_contrast(img, fill, resample):
    return ImageOps.autocontrast(img)


def _equalize(img, fill, resample):
    return ImageOps.equalize(img)


def _invert(img, fill, resample):
    return ImageOps.invert(img)


def _posterize(img, bits, fill, resample):
    if bits >= 8:
        return img
    if bits <= 0:  # keep no bit: black. Pillow >= 10 rejects 0 bits; older PIL (timm's) gave this.
        return Image.new(img.mode, img.size, 0)
    return ImageOps.posterize(img, bits)


def _solarize(img, threshold, fill, resample):
    return ImageOps.solarize(img, threshold)


def _solarize_add(img, add, fill, resample, threshold=128):
    lut = [min(255, i + add) if i < threshold else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _enhancer(kind):
    def enhance(img, factor, fill, resample):
        return kind(img).enhance(factor)
    return enhance


# --- magnitude -> op arguments (timm's level functions; `rng` only draws the random sign) ----------

def _signed(value, rng):
    return -value if rng.random() > 0.5 else value


def _no_args(level, rng):
    return ()


def _rotate_args(level, rng):
    return (_signed(level / LEVEL_DENOM * 30.0, rng),)


def _shear_args(level, rng):
    return (_signed(level / LEVEL_DENOM * 0.3, rng),)


def _translate_rel_args(level, rng):
    return (_signed(level / LEVEL_DENOM * TRANSLATE_PCT, rng),)


def _enhance_args(level, rng):
    return (level / LEVEL_DENOM * 1.8 + 0.1,)


def _enhance_increasing_args(level, rng):
    return (max(0.1, 1.0 + _signed(level / LEVEL_DENOM * 0.9, rng)),)


def _posterize_args(level, rng):
    return (int(level / LEVEL_DENOM * 4),)


def _posterize_increasing_args(level, rng):
    return (4 - int(level / LEVEL_DENOM * 4),)


def _solarize_args(level, rng):
    return (min(256, int(level / LEVEL_DENOM * 256)),)


def _solarize_increasing_args(level, rng):
    return (256 - min(256, int(level / LEVEL_DENOM * 256)),)


def _solarize_add_args(level, rng):
    return (min(128, int(level / LEVEL_DENOM * 110)),)


OPS = {
    "AutoContrast": (_auto_contrast, _no_args),
    "Equalize": (_equalize, _no_args),
    "Invert": (_invert, _no_args),
    "Rotate": (_rotate, _rotate_args),
    "Posterize": (_posterize, _posterize_args),
    "PosterizeIncreasing": (_posterize, _posterize_increasing_args),
    "Solarize": (_solarize, _solarize_args),
    "SolarizeIncreasing": (_solarize, _solarize_increasing_args),
    "SolarizeAdd": (_solarize_add, _solarize_add_args),
    "Color": (_enhancer(ImageEnhance.Color), _enhance_args),
    "ColorIncreasing": (_enhancer(ImageEnhance.Color), _enhance_increasing_args),
    "Contrast": (_enhancer(ImageEnhance.Contrast), _enhance_args),
    "ContrastIncreasing": (_enhancer(ImageEnhance.Contrast), _enhance_increasing_args),
    "Brightness": (_enhancer(ImageEnhance.Brightness), _enhance_args),
    "BrightnessIncreasing": (_enhancer(ImageEnhance.Brightness), _enhance_increasing_args),
    "Sharpness": (_enhancer(ImageEnhance.Sharpness), _enhance_args),
    "SharpnessIncreasing": (_enhancer(ImageEnhance.Sharpness), _enhance_increasing_args),
    "ShearX": (_shear_x, _shear_args),
    "ShearY": (_shear_y, _shear_args),
    "TranslateXRel": (_translate_x_rel, _translate_rel_args),
    "TranslateYRel": (_translate_y_rel, _translate_rel_args),
}

_GEOMETRY = ("ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
DEFAULT_OP_SET = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
                  "Color", "Contrast", "Brightness", "Sharpness") + _GEOMETRY
INCREASING_OP_SET = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                     "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                     "BrightnessIncreasing", "SharpnessIncreasing") + _GEOMETRY


class RandAugment:
    """Apply a RandAugmentSpec to PIL RGB images; `fill` is the RGB colour uncovered by geometric ops."""

    def __init__(self, spec, fill=(124, 116, 104), resample=Image.Resampling.BICUBIC):
        self.spec = spec
        self.fill = tuple(int(c) for c in fill)
        self.resample = resample
        self.op_names = INCREASING_OP_SET if spec.increasing else DEFAULT_OP_SET

    def _magnitude(self, rng):
        spec = self.spec
        magnitude = spec.magnitude
        if spec.magnitude_std == math.inf:
            magnitude = rng.uniform(0.0, magnitude)
        elif spec.magnitude_std > 0:
            magnitude = rng.normal(magnitude, spec.magnitude_std)
        return float(min(max(magnitude, 0.0), spec.magnitude_max))

    def draw(self, rng):
        """The random choices for one image: `num_ops` (op name, args) pairs; args None = op skipped."""
        picks = rng.integers(0, len(self.op_names), size=self.spec.num_ops)  # with replacement
        plan = []
        for pick in picks:
            name = self.op_names[pick]
            if rng.random() >= self.spec.prob:
                plan.append((name, None))
                continue
            plan.append((name, OPS[name][1](self._magnitude(rng), rng)))
        return plan

    def apply(self, img, plan):
        for name, args in plan:
            if args is not None:
                img = OPS[name][0](img, *args, fill=self.fill, resample=self.resample)
        return img

    def __call__(self, img, rng):
        return self.apply(img, self.draw(rng))
