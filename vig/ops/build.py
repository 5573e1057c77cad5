"""Compile the C++ kernels in vig/ops/csrc with g++, once per content, into a per-user cache.

The cache lives outside the repository (`$VIG_KERNEL_CACHE`, default `~/.cache/vig-kernels`). A library
is keyed by a hash of its source, the shared header(s), the flags, the compiler and the CPU, so a changed
source or another machine never reuses a stale build. Concurrent processes (msrun workers, pytest-xdist)
build each library once, under a file lock; the library appears under its final name only when whole.

`library(source)` returns the path, or None with one warning when there is no working g++: callers then
use MindSpore's native op, which computes the same function (vig/ops chooses).
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
from pathlib import Path

from ..io import atomic_path

_LOG = logging.getLogger(__name__)
SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
_BASE_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
# GELU needs -ffast-math for GCC to vectorise erff/expf through libmvec; the rest keeps IEEE semantics.
SOURCES = {
    "vig_gelu.cc": ["-ffast-math"],
    "vig_cpu_kernels.cc": ["-fno-math-errno"],
    "vig_norm.cc": ["-fno-math-errno"],
    "vig_gemm.cc": ["-fno-math-errno"],
}
# sources that call oneDNN's sgemm (declared in vig_kernel.h)
_SGEMM_USERS = ("vig_gemm.cc", "vig_cpu_kernels.cc")


def cache_dir() -> Path:
    return Path(os.environ.get("VIG_KERNEL_CACHE") or Path.home() / ".cache" / "vig-kernels")


def _link_flags(source: str) -> list[str]:
    """sgemm comes from the libdnnl MindSpore ships (found next to MindSpore's own libraries, and looked
    up there at run time too)."""
    if source not in _SGEMM_USERS:
        return []
    import mindspore as ms

    libdir = Path(ms.__file__).resolve().parent / "lib"
    if not (libdir / "libdnnl.so.3").exists():
        raise OSError(f"{libdir / 'libdnnl.so.3'} not found (MindSpore's oneDNN), needed by {source}")
    return [f"-L{libdir}", "-l:libdnnl.so.3", f"-Wl,-rpath,{libdir}"]


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def _compiler_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout


def _content_key(src: Path, command: list[str], cxx: str) -> str:
    headers = [h.read_bytes() for h in sorted(SOURCE_DIR.glob("*.h"))]
    parts = [src.read_bytes(), *headers, " ".join(command).encode(), _compiler_version(cxx).encode(),
             _cpu_signature().encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _build(source: str, cxx: str) -> Path:
    """Compile `source` into the cache (once per content hash) and return the library path."""
    src = SOURCE_DIR / source
    flags, link = _BASE_FLAGS + SOURCES[source], _link_flags(source)
    out_dir = cache_dir()
    lib = out_dir / f"{src.stem}-{_content_key(src, flags + link, cxx)}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent workers build only once
        if lib.exists():
            return lib
        _LOG.info("compiling %s -> %s", src, lib)
        # g++ writes the file itself: compile to a temp name in the cache, then rename
        with atomic_path(lib, mode=0o755) as tmp:
            subprocess.run([cxx, *flags, "-o", str(tmp), str(src), *link], capture_output=True, text=True, check=True)
    return lib


@functools.lru_cache(maxsize=None)
def library(source: str) -> str | None:
    """Path of the compiled `source` (a key of SOURCES), or None (with one warning) when it cannot be built."""
    if source not in SOURCES:
        raise ValueError(f"unknown kernel source {source!r}; expected one of {', '.join(SOURCES)}")
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
