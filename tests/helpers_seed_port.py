"""What tests/reference/seed_port.py and tests/test_seed_port.py share: the configurations, the
seeded weights and inputs (regenerated on both sides, so only outputs are stored), and how an output
is summarised (values at fixed positions plus whole-tensor sums)."""
from __future__ import annotations

import zlib

import numpy as np

DATA_DIR = "seed_port"  # under tests/data
REFERENCE_FILE = "port_reference.npz"
CHECKPOINT_NAMES_FILE = "port_checkpoint_names.json"
META_FILE = "port_reference.json"

# The port's ViG(num_classes, dim, depth, mlp_ratio, drop_path_rate, k) and the same network as our overrides.
# depth 6 reaches dilation 2 (blocks 4, 5: k 5 and 6 -> 3 neighbours each). The port's pos_embed is 14x14: 224 px.
TINY = {"port": dict(num_classes=10, dim=32, depth=6, mlp_ratio=4, drop_path_rate=0.0, k=3),
        "arch": "vig_ti_patch16_224", "ours": dict(num_classes=10, channels=(32,), blocks=(6,), k=3), "batch": 2}
VIG_S = {"port": dict(num_classes=1000, dim=320, depth=16, mlp_ratio=4, drop_path_rate=0.0, k=9),
         "arch": "vig_s_patch16_224", "ours": dict(num_classes=1000), "batch": 2}
IMAGE_SIZE, GRID = 224, 14
SAMPLES = 4096  # values kept per ViG-S output


def _rng(seed: int, tag: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(tag.encode())])


def seeded_weight(name: str, shape, seed: int) -> np.ndarray:
    """A value for one port parameter, from its name: convs at the port's init scale, BatchNorm with
    statistics and affine terms away from 0/1 (so eval-mode normalisation is exercised)."""
    rng, shape = _rng(seed, name), tuple(shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight":
        fan_out = shape[0] * int(np.prod(shape[2:]))
        value = rng.normal(0.0, np.sqrt(2.0 / fan_out), shape)
    elif leaf == "bias":
        value = rng.normal(0.0, 0.05, shape)
    elif leaf == "gamma":
        value = rng.uniform(0.6, 1.4, shape)
    elif leaf in ("beta", "moving_mean"):
        value = rng.normal(0.0, 0.1, shape)
    elif leaf == "moving_variance":
        value = rng.uniform(0.5, 1.5, shape)
    elif name == "pos_embed":
        value = np.clip(rng.normal(0.0, 0.02, shape), -0.04, 0.04)
    else:
        raise KeyError(f"no seeded value for parameter {name!r}")
    return value.astype(np.float32)


def seeded_weights(shapes: dict, seed: int) -> dict[str, np.ndarray]:
    return {name: seeded_weight(name, shape, seed) for name, shape in shapes.items()}


def seeded_image(batch: int, seed: int) -> np.ndarray:
    return _rng(seed, "image").uniform(-1, 1, (batch, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)


def seeded_features(dim: int, batch: int, seed: int, tag: str) -> np.ndarray:
    """A stand-in for the map entering a block (or the head): N(0, 1) like a BatchNorm output."""
    return _rng(seed, tag).normal(0.0, 1.0, (batch, dim, GRID, GRID)).astype(np.float32)


def sample_positions(size: int, seed: int = 0) -> np.ndarray:
    return np.sort(_rng(seed, f"positions/{size}").choice(size, min(SAMPLES, size), replace=False))


def summarise(value: np.ndarray) -> dict[str, np.ndarray]:
    """Values at SAMPLES fixed positions, and the sum and sum of squares of the whole tensor."""
    flat = np.asarray(value, np.float32).ravel()
    wide = flat.astype(np.float64)
    return {"samples": flat[sample_positions(flat.size)], "sum": np.float64(wide.sum()),
            "sumsq": np.float64((wide * wide).sum()), "shape": np.asarray(value.shape, np.int64)}
