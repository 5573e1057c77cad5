"""Test helpers for vig.convert, usable without torch.

- `save_torch_file(path, obj)`: writes a checkpoint in torch's zip format (``<name>/data.pkl`` +
  ``<name>/data/<key>`` storages, pickle protocol 2, 64-byte aligned records) by emitting the pickle
  opcodes torch.save emits, so it is loadable by real ``torch.load`` too.
- `original_vig_state_dict(...)`: random tensors with the exact key names and shapes of the original
  PyTorch ViG (huawei-noah/Efficient-AI-Backbones vig_pytorch/vig.py, pyramid_vig.py, gcn_lib/),
  derived from its module structure, not from our model.
- `REAL_TORCH_SAMPLE`: a tiny checkpoint written by real torch 2.x (gzip + base64, see below).
"""
from __future__ import annotations

import base64
import collections
import gzip
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------------------------
# Writing the torch zip format
# ----------------------------------------------------------------------------------------------
_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage",
                  np.dtype(np.bool_): "BoolStorage"}


@dataclass
class TensorView:
    """A tensor that views a 1-D `storage` (shared by identity with other views) at offset/stride."""

    storage: np.ndarray
    offset: int
    shape: tuple
    stride: tuple


@dataclass
class BFloat16:
    """A float32 array to be saved as bfloat16 (its upper 16 bits)."""

    values: np.ndarray


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t" if items else b")"


_ORDERED_DICT = _global("collections", "OrderedDict") + b")R"  # OrderedDict()


class _PickleWriter:
    """Emits torch.save's pickle for dicts/lists/scalars/arrays; collects the storages to write."""

    def __init__(self):
        self.storages: list[bytes] = []
        self._shared: dict[int, tuple[str, np.ndarray]] = {}  # id -> (key, storage kept alive)

    def _storage_key(self, flat: np.ndarray, shared: bool) -> str:
        if shared and id(flat) in self._shared:
            return self._shared[id(flat)][0]
        key = str(len(self.storages))
        self.storages.append(np.ascontiguousarray(flat).astype(flat.dtype.newbyteorder("<")).tobytes())
        if shared:
            self._shared[id(flat)] = (key, flat)
        return key

    def _tensor(self, storage: np.ndarray, storage_name: str, shared: bool, offset, shape, stride) -> bytes:
        key = self._storage_key(storage, shared)
        pid = _tuple([_str("storage"), _global("torch", storage_name), _str(key), _str("cpu"),
                      _int(storage.size)]) + b"Q"  # BINPERSID
        args = [pid, _int(offset), _tuple([_int(n) for n in shape]), _tuple([_int(s) for s in stride]),
                b"\x89", _ORDERED_DICT]  # requires_grad=False, backward_hooks=OrderedDict()
        return _global("torch._utils", "_rebuild_tensor_v2") + _tuple(args) + b"R"

    def dump(self, obj) -> bytes:
        if isinstance(obj, np.ndarray):
            flat = np.ascontiguousarray(obj).reshape(-1)
            stride = tuple(int(np.prod(obj.shape[i + 1:], dtype=np.int64)) for i in range(obj.ndim))
            return self._tensor(flat, _STORAGE_NAMES[obj.dtype], False, 0, obj.shape, stride)
        if isinstance(obj, TensorView):
            return self._tensor(obj.storage, _STORAGE_NAMES[obj.storage.dtype], True, obj.offset,
                                obj.shape, obj.stride)
        if isinstance(obj, BFloat16):
            bits = (np.ascontiguousarray(obj.values, np.float32).view(np.uint32) >> 16).astype(np.uint16)
            stride = tuple(int(np.prod(bits.shape[i + 1:], dtype=np.int64)) for i in range(bits.ndim))
            flat = bits.reshape(-1)
            return self._tensor(flat, "BFloat16Storage", False, 0, bits.shape, stride)
        if isinstance(obj, collections.OrderedDict):  # as state_dict(): items, then BUILD its _metadata
            body = b"".join(_str(k) + self.dump(v) for k, v in obj.items())
            metadata = b"}(" + _str("_metadata") + _ORDERED_DICT + b"(" + _str("") + b"}(" + _str("version") \
                + _int(1) + b"uuu"
            return _ORDERED_DICT + b"(" + body + b"u" + metadata + b"b"  # SETITEMS, BUILD
        if isinstance(obj, dict):
            return b"}(" + b"".join(_str(k) + self.dump(v) for k, v in obj.items()) + b"u"
        if isinstance(obj, (list, tuple)):
            body = b"".join(self.dump(v) for v in obj)
            return (b"](" + body + b"e") if isinstance(obj, list) else _tuple([self.dump(v) for v in obj])
        if isinstance(obj, bool):
            return b"\x88" if obj else b"\x89"
        if isinstance(obj, int):
            return _int(obj)
        if isinstance(obj, float):
            return b"G" + struct.pack(">d", obj)
        if isinstance(obj, str):
            return _str(obj)
        if obj is None:
            return b"N"
        raise TypeError(f"cannot write {type(obj).__name__} into a torch file")


def _write_aligned(archive: zipfile.ZipFile, name: str, data: bytes, alignment: int = 64) -> None:
    """Store `data` uncompressed with its payload aligned like torch's writer (padding extra field)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    offset = archive.fp.tell() + 30 + len(name.encode())
    pad = (-(offset + 4)) % alignment
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # torch's "FB" padding record
    archive.writestr(info, data)


def save_torch_file(path, obj, archive_name: str = "archive", pickle_bytes: bytes | None = None) -> Path:
    """Write `obj` (dicts/lists/scalars with numpy arrays, TensorView, BFloat16) as torch.save would.

    `pickle_bytes` replaces the generated data.pkl (to plant a hostile pickle in a valid archive).
    """
    writer = _PickleWriter()
    body = writer.dump(obj)
    data_pkl = pickle_bytes if pickle_bytes is not None else b"\x80\x02" + body + b"."
    path = Path(path)
    with zipfile.ZipFile(path, "w") as archive:
        _write_aligned(archive, f"{archive_name}/data.pkl", data_pkl)
        _write_aligned(archive, f"{archive_name}/byteorder", b"little")
        for key, raw in enumerate(writer.storages):
            _write_aligned(archive, f"{archive_name}/data/{key}", raw)
        _write_aligned(archive, f"{archive_name}/version", b"3\n")
    return path


# ----------------------------------------------------------------------------------------------
# The original PyTorch ViG's state dict layout
# ----------------------------------------------------------------------------------------------
def _conv(prefix: str, out_c: int, in_c: int, k: int = 1) -> dict:
    return {f"{prefix}.weight": (out_c, in_c, k, k), f"{prefix}.bias": (out_c,)}


def _bn(prefix: str, c: int) -> dict:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _grapher(prefix: str, c: int, conv: str, relative_pos_shape=None) -> dict:
    """gcn_lib.Grapher: fc1 (Conv+BN), graph_conv (DyGraphConv2d -> gconv with BasicConv nn, groups=4),
    fc2 (Conv+BN), relative_pos buffer (pyramid only)."""
    g = f"{prefix}.graph_conv.gconv"
    keys = {}
    if relative_pos_shape is not None:  # a Parameter of the Grapher itself: first in its state dict
        keys[f"{prefix}.relative_pos"] = relative_pos_shape
    keys.update({**_conv(f"{prefix}.fc1.0", c, c), **_bn(f"{prefix}.fc1.1", c)})
    if conv == "sage":
        keys.update({**_conv(f"{g}.nn1.0", c, c // 4), **_bn(f"{g}.nn1.1", c),
                     **_conv(f"{g}.nn2.0", 2 * c, 2 * c // 4), **_bn(f"{g}.nn2.1", 2 * c)})
    elif conv == "gin":
        keys.update({f"{g}.eps": (1,), **_conv(f"{g}.nn.0", 2 * c, c // 4), **_bn(f"{g}.nn.1", 2 * c)})
    else:  # mr, edge: BasicConv([2C, 2C], groups=4)
        keys.update({**_conv(f"{g}.nn.0", 2 * c, 2 * c // 4), **_bn(f"{g}.nn.1", 2 * c)})
    keys.update({**_conv(f"{prefix}.fc2.0", c, 2 * c), **_bn(f"{prefix}.fc2.1", c)})
    return keys


def _ffn(prefix: str, c: int, hidden: int) -> dict:
    return {**_conv(f"{prefix}.fc1.0", hidden, c), **_bn(f"{prefix}.fc1.1", hidden),
            **_conv(f"{prefix}.fc2.0", c, hidden), **_bn(f"{prefix}.fc2.1", c)}


def original_vig_shapes(channels, blocks, num_classes: int = 1000, pyramid: bool = False,
                        image_size: int = 224, stem_stride: int | None = None, conv: str = "mr",
                        reduce_ratios=(4, 2, 1, 1), head_dim: int = 1024) -> dict:
    """Key -> shape of `DeepGCN.state_dict()` in vig.py (isotropic) or pyramid_vig.py, in its order.

    The original hard-codes 224 / stride 16 (isotropic) or 4 (pyramid); image_size and stem_stride
    only shrink the same structure for small tests.
    """
    stem_stride = stem_stride or (4 if pyramid else 16)
    n_down = int(np.log2(stem_stride))
    c0 = channels[0]
    grid = image_size // stem_stride
    keys, idx = {"pos_embed": (1, c0, grid, grid)}, 0  # DeepGCN's own Parameter comes first
    for i in range(n_down):  # Stem: n_down x (Conv s2, BN, act) then Conv s1, BN
        width = c0 // 2 ** (n_down - 1 - i)
        prev = 3 if i == 0 else c0 // 2 ** (n_down - i)
        keys.update({**_conv(f"stem.convs.{3 * i}", width, prev, 3), **_bn(f"stem.convs.{3 * i + 1}", width)})
    keys.update({**_conv(f"stem.convs.{3 * n_down}", c0, c0, 3), **_bn(f"stem.convs.{3 * n_down + 1}", c0)})
    for stage, (c, n_blocks) in enumerate(zip(channels, blocks)):
        if stage > 0:  # pyramid Downsample: Conv 3x3 s2 + BN
            keys.update({**_conv(f"backbone.{idx}.conv.0", c, channels[stage - 1], 3),
                         **_bn(f"backbone.{idx}.conv.1", c)})
            idx += 1
            grid //= 2
        n, r = grid * grid, reduce_ratios[stage] if pyramid else 1
        for _ in range(n_blocks):
            rel = (1, n, n // (r * r)) if pyramid else None
            keys.update(_grapher(f"backbone.{idx}.0", c, conv, rel))
            keys.update(_ffn(f"backbone.{idx}.1", c, 4 * c))
            idx += 1
    keys.update({**_conv("prediction.0", head_dim, channels[-1]), **_bn("prediction.1", head_dim),
                 **_conv("prediction.4", num_classes, head_dim)})
    return keys


def random_state_dict(shapes: dict, seed: int = 0) -> collections.OrderedDict:
    """Distinct random values per tensor, scaled so a forward pass stays finite: conv weights
    ~N(0, 1/fan_in), BN variances in [0.5, 1.5], num_batches_tracked int64 scalars."""
    rng = np.random.default_rng(seed)
    state = collections.OrderedDict()
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = np.array(int(rng.integers(1, 10**6)), np.int64)
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name.endswith(".weight") and len(shape) == 1:  # BN gamma
            state[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif len(shape) == 4 and name != "pos_embed":  # conv weight
            fan_in = int(np.prod(shape[1:]))
            state[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        else:
            state[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return state


def trainable_count(shapes: dict) -> int:
    """Parameters the original trains: everything but BN statistics and relative_pos buffers."""
    frozen = ("running_mean", "running_var", "num_batches_tracked", "relative_pos")
    return sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(frozen))


# ----------------------------------------------------------------------------------------------
# A checkpoint written by real torch 2.14 (kept inline so the reader is tested against torch's own
# writer without torch installed). Generated with:
#   m = nn.Sequential(nn.Conv2d(8, 8, 1, groups=4), nn.BatchNorm2d(8)); set weight=arange(16)/4,
#   bias=arange(8)-4, BN weight=1.5, bias=-0.25, running_mean=arange(8)/8, running_var=arange(8)+1,
#   num_batches_tracked=7; state = {"module."+k: v} (with _metadata) plus
#   "module.view.t" = arange(12.).reshape(3, 4).t() and "module.view.tail" = <same base>[4:] (one shared
#   storage), "module.half" = fp16 [0.5, -2], "module.bf16" = bf16 [1.5, -3];
#   torch.save({"state_dict": state, "epoch": 3, "arch": "toy"}, "sample.pth")
# ----------------------------------------------------------------------------------------------
REAL_TORCH_SAMPLE = gzip.decompress(base64.b64decode("""
H4sICPjUB2sCA3NhbXBsZS5wdGgApZdPbNtkGMadpE3TbG0zug0K+9NtDFK2pflXJ2Frm4YRBh6syxgzHZA5iZt4c+O+yZeO
TapUCTppN4Q4DA5otwm4IHHgBr1x4QAXLoA0icPEiTtw4P38uam/r2vTUktvkzh+fs/zxfb7utOKr0uSAgFp3TYgDUpNbW7e
1EcrGtEi8zfMfG5AmuG3Je8iSGE1iIIm0YherBhlAp5y2TJNvUwMq94MXmhU9IZeOYvfBME7UgBfWB1AwZxVaZl6JBq5qRvV
GoGuMrEa5Vqk2CKG2QwWG3qpZZiVItHrTatRXIgHoTscVntsL6uhVXXwM0kwb1oaucR2BqFH9eAxUQioPnwtz7egVwkRCF5U
pLASULyKR/EQ2BVm7+j73XdrNFgfgf4CDKh97nQlQ2tCqIbWNX+NoWOwp9arBAg8gUglsAyDimcZ9jLIPgL7C/Cke4mx1SU+
xWHiMMQwTzuYZyjmAMMcJHCoAIfdWWIsyzAHScARBjnqQI5RyLMMcpzAcwV4Xt3nhjRa9bpRrxbndK0OYQ6WhBEGe8GBnaCw
kwx2ikCkAKPq3sfBFrQGRDnWGMQYK+6wEpSVZKwxAnIBUuoBN6vemiuWNFKu6c0iaWjlG3oF0ozpnOfzVr3aPs0Z20aGF9EG
z+FptBkZYfgzBMYLMOH+8RYM/WaEwCSXMQVZFO8mMEUzdim+O5DDK6LrDrzEQGcJvFyAvBoSQZphwiurrJpDOXcRGbjSV+lK
X2MEhcD5Aryu7loj1DRzFt7gFnYOd7UXdsHOloZppHoJXKTZvMtQoNRLjPomgcsFeMtNLc3GZLjCUXP2fRGT22TVJmfgbUae
cchXKfkdRn6XwHsFKLYW4ZraiwfjZUI02gFAs78vhVXaHqC8CBX7XlzQG028z0FXPE3nxptdhGqt/TkGtUUw8LO32WqW1G7c
pc9b5RpcV3wqdh9Jw6xww75ZiXULzFZkWukJ/Hv10WdX8Gta0xu2qf3S8dU2FZm1GnMaKTqB8rkjYrdav8Wo07d//fYBDUpr
Y6chKd12cvpPUTONan1Or5N8LtnZ7DGbnKQBJm/Cn1608G4aICRlVwOUbhHdom01nzvzv3xXN9MgxNRphuXxP4b86OLfNEOf
NOmeCqPRfO70TgIw6tIE/pmUpCzWEtZ9rBWsh1i4aCmENYwVxcpiTWNdw5rP0uRHf4j3Z9mBmybv5pLH8jmPhP5LK6jEkrCW
vnfyOL5Zm3/P++nyMO4Y7sA/zvHjW7r+2Do3LuqfXJ65vX3/xBb9l77brKj/9RM//r19/+QW/e1tgl0DK851MOxcC9fs9f9+
4pt/tu8/ttX1t881vse6j7WC9ZBeTlPUP/KVdW77/vKW/HscNfWZ/+WRRcGBDj7jnE8qn8tIO73/Nv0N8P7DGsaK2r/H+4uz
E1Ha5zvk3MflTOdze9bnxJ66QpkffqF+REdBVwfmFMfM5HPjO2p/MyuTWdvfe+jYYGf//rUO3B4yO+u/iSB1//nz6uXO/f+g
lGgPIHv5Tb1h4AS6rdHn7KJRyedGtxsmFk+kUnIsmoym5UwyOZaOyqloOpZMy3JSziSS6Uwink5nojTll80Hh8OYI2yn9NCw
7ZzuYT2wLrnwf4Qods/f/ZzwQZe0wXQXGe4ROsQx9nRLG89tEeOegiEO8/Eapj19RbV7EvXxjyl+iZ+botQ9ZHjpT4I0Jkrd
84GXRnt4aVyUuls7L/1akCZEqbsrC64BXpoUpe6GKrgK0jFR6u6RgmsvL5VFqbtt8dJ7gjQlSt3diZdmg7w0LUrdjYWXfiJI
M6LU3RX6OeneXZLQh0St+149yF/Ha9rHd5Fpxe8/6Rx8yHfK9fjJv/7qY6/p3asjzG9Ps0HnAPY03e1nmpB9PDv2P0zgsB11
EAAA
"""))
