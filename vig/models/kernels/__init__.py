"""Compiled CPU kernels for ViG, exposed as `mindspore.ops.Custom` primitives with gradients.

MindSpore 2.10's own CPU kernels for exact GELU, top-k, max over gathered neighbours, the pieces of a
k x k convolution, BatchNorm, channel sums and even 1x1 convolutions are 2-100x slower than PyTorch's
(docs/performance.md). The C++ sources next to this file are compiled with g++ on first use into a
per-user cache outside the repository (`$VIG_KERNEL_CACHE`, default `~/.cache/vig-kernels`), keyed by a
hash of source, flags, compiler and CPU, so a changed source or another machine never reuses a stale
library. Matrix products call oneDNN's sgemm from the libdnnl.so.3 that MindSpore ships.

Every getter returns None when the kernels cannot be used: not on CPU, `VIG_NATIVE_OPS=1` in the
environment, or no working g++ (a warning is logged once). Callers then use the native MindSpore op,
which computes the same function (GPU and Ascend always take that path).
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import ops

_LOG = logging.getLogger(__name__)
_HERE = Path(__file__).resolve().parent
_BASE_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
# GELU needs -ffast-math for GCC to vectorise erff/expf through libmvec; the rest keeps IEEE semantics.
_SOURCES = {
    "vig_gelu.cc": ["-ffast-math"],
    "vig_cpu_kernels.cc": ["-fno-math-errno"],
    "vig_norm.cc": ["-fno-math-errno"],
    "vig_gemm.cc": ["-fno-math-errno"],
}


def _link_flags(source: str) -> list[str]:
    """vig_gemm.cc and the kNN in vig_cpu_kernels.cc call oneDNN's sgemm from the libdnnl MindSpore ships
    (found next to MindSpore's own libraries, and looked up there at run time too)."""
    if source not in ("vig_gemm.cc", "vig_cpu_kernels.cc"):
        return []
    libdir = Path(ms.__file__).resolve().parent / "lib"
    if not (libdir / "libdnnl.so.3").exists():
        raise OSError(f"{libdir / 'libdnnl.so.3'} not found (MindSpore's oneDNN), needed by {source}")
    return [f"-L{libdir}", "-l:libdnnl.so.3", f"-Wl,-rpath,{libdir}"]


def cache_dir() -> Path:
    return Path(os.environ.get("VIG_KERNEL_CACHE") or Path.home() / ".cache" / "vig-kernels")


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def _compiler_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout


def _build(source: str, cxx: str) -> Path:
    """Compile `source` into the cache (once per content hash) and return the library path."""
    src = _HERE / source
    flags = _BASE_FLAGS + _SOURCES[source]
    link = _link_flags(source)
    key = hashlib.sha256(b"\0".join([src.read_bytes(), " ".join(flags + link).encode(),
                                     _compiler_version(cxx).encode(), _cpu_signature().encode()])).hexdigest()[:16]
    out_dir = cache_dir()
    lib = out_dir / f"{src.stem}-{key}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent workers (msrun, pytest-xdist) build only once
        if lib.exists():
            return lib
        _LOG.info("compiling %s -> %s", src, lib)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            subprocess.run([cxx, *flags, "-o", tmp, str(src), *link], capture_output=True, text=True, check=True)
            os.replace(tmp, lib)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return lib


@functools.lru_cache(maxsize=None)
def library(source: str) -> str | None:
    """Path of the compiled `source`, or None (with one warning) when it cannot be built."""
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if cxx is None:
        _LOG.warning("vig kernels: no g++ found; using MindSpore's native CPU ops (much slower)")
        return None
    try:
        return str(_build(source, cxx))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or err
        _LOG.warning("vig kernels: building %s failed, using MindSpore's native CPU ops: %s", source, detail)
        return None


def enabled() -> bool:
    """Whether the compiled kernels should be used in cells built now."""
    if os.environ.get("VIG_NATIVE_OPS", "0") not in ("", "0"):
        return False
    try:
        return ms.get_context("device_target") == "CPU"
    except Exception:  # pragma: no cover - context not initialised
        return False


def set_cpu_threads(num: int | None = None) -> int | None:
    """Give MindSpore's CPU kernels one thread per available core (or `num`).

    MindSpore 2.10 defaults to 25 CPU op threads whatever the machine; on a 2-core box that
    oversubscription made a ViG-Ti forward 3x slower (docs/performance.md). Call once, after
    `ms.set_device("CPU")` and before the first graph runs. Returns the count set, or None when not on
    CPU or already configured (MindSpore allows setting it only once per process).
    """
    if ms.get_context("device_target") != "CPU":
        return None
    count = num or len(os.sched_getaffinity(0))
    try:
        ms.device_context.cpu.op_tuning.threads_num(count)
    except RuntimeError:  # already set in this process
        return None
    return count


def _custom(source: str, func: str, out_shape, out_dtype, bprop=None, variant: str = ""):
    lib = library(source)
    if lib is None:
        return None
    op = ops.Custom(f"{lib}:{func}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot", bprop=bprop)
    # PyNative caches shape inference per primitive attributes: instances whose output shape depends on
    # their own settings (k, stride, ...) must differ in an attribute, or they get each other's shapes.
    op.add_prim_attr("vig_variant", f"{func}:{variant}")
    return op


def geometry(*values: int) -> ms.Tensor:
    """The int32 parameter vector some kernels take as their last input."""
    return ms.Tensor(np.array(values, np.int32))


# ---------------------------------------------------------------------------------------------------
# Primitive factories (None = use the native op). Built once per process and shared by all cells.
# ---------------------------------------------------------------------------------------------------
def gelu():
    """Exact GELU, x -> x * Phi(x)."""
    return _gelu() if enabled() else None


@functools.lru_cache(maxsize=None)
def _gelu():
    backward = _custom("vig_gelu.cc", "GeluBackward", lambda x, dy: x, lambda x, dy: x)
    if backward is None:
        return None

    def bprop(x, out, dout):
        return (backward(x, dout),)

    return _custom("vig_gelu.cc", "GeluForward", lambda x: x, lambda x: x, bprop)


def im2col(kernel_size: int, stride: int, padding: int):
    """(x (B, C, H, W), geometry(k, s, p)) -> cols (B, k*k*C, Ho, Wo), channel (dy*k + dx)*C + c."""
    return _im2col(kernel_size, stride, padding) if enabled() else None


@functools.lru_cache(maxsize=None)
def _im2col(kernel_size: int, stride: int, padding: int):
    k, s, p = kernel_size, stride, padding

    def cols_shape(x, geo):
        return [x[0], k * k * x[1], (x[2] + 2 * p - k) // s + 1, (x[3] + 2 * p - k) // s + 1]

    col2im = _custom("vig_cpu_kernels.cc", "Col2Im", lambda dcols, geo, x: x, lambda dcols, geo, x: dcols)
    if col2im is None:
        return None

    def bprop(x, geo, out, dout):
        return col2im(dout, geo, x), ops.zeros_like(geo)

    return _custom("vig_cpu_kernels.cc", "Im2Col", cols_shape, lambda x, geo: x, bprop, f"{k},{s},{p}")


def max_relative():
    """(x (B, C, N, 1), y (B, C, M, 1), idx (B, N, k) int32) -> (out (B, 2C, N, 1), argmax (B, C, N, 1) int32):
    MRConv's features, channel 2c = x[c] and 2c+1 = max_j y[b, c, idx[b, n, j]] - x[c]."""
    return _max_relative() if enabled() else None


@functools.lru_cache(maxsize=None)
def _max_relative():
    def out_shape(x, y, idx):
        return [x[0], 2 * x[1], x[2], 1], [x[0], x[1], x[2], 1]

    backward = _custom("vig_cpu_kernels.cc", "MaxRelativeBackward", lambda dout, arg, y: ([y[0], y[1], arg[2], 1], y),
                       lambda dout, arg, y: (dout, dout))
    if backward is None:
        return None

    def bprop(x, y, idx, out, dout):
        dx, dy = backward(dout[0], out[1], y)
        return dx, dy, ops.zeros_like(idx)

    return _custom("vig_cpu_kernels.cc", "MaxRelative", out_shape, (ms.float32, ms.int32), bprop)


def dilated_knn(k: int, with_relative_pos: bool):
    """(x (B, C, N, 1), y (B, C, M, 1)[, rel (1, N, M)], geometry(k, d)) -> idx (B, N, k) int32: the k*d
    nearest keys after L2 normalisation (plus rel), every d-th. No gradient (indices)."""
    return _dilated_knn(k, with_relative_pos) if enabled() else None


@functools.lru_cache(maxsize=None)
def _dilated_knn(k: int, with_relative_pos: bool):
    if with_relative_pos:
        def out_shape(x, y, rel, geo):
            return [x[0], x[2], k]

        def bprop(x, y, rel, geo, out, dout):
            return ops.zeros_like(x), ops.zeros_like(y), ops.zeros_like(rel), ops.zeros_like(geo)

        return _custom("vig_cpu_kernels.cc", "DilatedKnnRel", out_shape, ms.int32, bprop, str(k))

    def out_shape(x, y, geo):
        return [x[0], x[2], k]

    def bprop(x, y, geo, out, dout):
        return ops.zeros_like(x), ops.zeros_like(y), ops.zeros_like(geo)

    return _custom("vig_cpu_kernels.cc", "DilatedKnn", out_shape, ms.int32, bprop, str(k))


def batch_norm_train():
    """(x (B, C, ...), gamma, beta, moving_mean, moving_var (C), hyper [eps, momentum]) -> (y, mean, invstd,
    new moving_mean, new moving_var): training-mode BatchNorm with batch statistics and the running
    statistics' update; the gradient flows to x, gamma and beta through y only."""
    return _batch_norm_train() if enabled() else None


@functools.lru_cache(maxsize=None)
def _batch_norm_train():
    backward = _custom("vig_norm.cc", "BatchNormTrainGrad", lambda dy, x, gamma, mean, invstd: (x, gamma, gamma),
                       lambda dy, x, gamma, mean, invstd: (x, gamma, gamma))
    if backward is None:
        return None

    def bprop(x, gamma, beta, moving_mean, moving_var, hyper, out, dout):
        dx, dgamma, dbeta = backward(dout[0], x, gamma, out[1], out[2])
        return (dx, dgamma, dbeta, ops.zeros_like(moving_mean), ops.zeros_like(moving_var),
                ops.zeros_like(hyper))

    def shapes(x, gamma, beta, moving_mean, moving_var, hyper):
        return x, gamma, gamma, gamma, gamma

    return _custom("vig_norm.cc", "BatchNormTrain", shapes, shapes, bprop)


def bias_add():
    """(x (B, C, ...), bias (C)) -> x + bias per channel; its gradient sums dy per channel in one pass
    (the ReduceSum autodiff emits for a broadcast add is ~100x slower on CPU)."""
    return _bias_add() if enabled() else None


@functools.lru_cache(maxsize=None)
def _bias_add():
    backward = _custom("vig_norm.cc", "BiasAddGrad", lambda dy, bias: bias, lambda dy, bias: bias)
    if backward is None:
        return None

    def bprop(x, bias, out, dout):
        return dout, backward(dout, bias)

    return _custom("vig_norm.cc", "BiasAdd", lambda x, bias: x, lambda x, bias: x, bprop)


def conv1x1(groups: int):
    """(x (B, Cin, H, W), w (Cout, Cin/groups, 1, 1), geometry(groups)) -> y (B, Cout, H, W): a 1x1
    convolution without bias, one sgemm per image and group; gradients for x and w."""
    return _conv1x1(groups) if enabled() else None


@functools.lru_cache(maxsize=None)
def _conv1x1(groups: int):
    backward_input = _custom("vig_gemm.cc", "Conv1x1BackwardInput", lambda dy, w, geo, x: x,
                             lambda dy, w, geo, x: dy)
    backward_weight = _custom("vig_gemm.cc", "Conv1x1BackwardWeight", lambda dy, x, geo, w: w,
                              lambda dy, x, geo, w: dy)
    if backward_input is None or backward_weight is None:
        return None

    def bprop(x, w, geo, out, dout):
        return backward_input(dout, w, geo, x), backward_weight(dout, x, geo, w), ops.zeros_like(geo)

    def out_shape(x, w, geo):
        return [x[0], w[0], x[2], x[3]]

    return _custom("vig_gemm.cc", "Conv1x1", out_shape, lambda x, w, geo: x, bprop, str(groups))


def square_sum():
    """g (float32, any shape) -> (1,) sum of squares (accumulated in double). No gradient (train-step use)."""
    return _square_sum() if enabled() else None


@functools.lru_cache(maxsize=None)
def _square_sum():
    return _custom("vig_norm.cc", "SquareSum", lambda g: [1], lambda g: g)


def scale():
    """(g (float32, any shape), factor (1,)) -> g * factor. No gradient (train-step use)."""
    return _scale() if enabled() else None


@functools.lru_cache(maxsize=None)
def _scale():
    return _custom("vig_norm.cc", "Scale", lambda g, f: g, lambda g, f: g)
