"""Shared test setup: quiet MindSpore on CPU, small models, a scratch working directory, the kernels."""
import logging
import os
import shutil

os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
import pytest  # noqa: E402

ms.set_device("CPU")

# A ViG small enough for CPU tests, built by overrides of a registered variant (not a code copy).
TINY_ISOTROPIC = dict(channels=(32,), blocks=(4,), k=4, image_size=64, stem_stride=8)
TINY_PYRAMID = dict(channels=(16, 24, 32, 48), blocks=(1, 1, 2, 1), k=3, image_size=64)


@pytest.fixture(autouse=True)
def _graph_dumps_in_tmp(tmp_path, monkeypatch):
    # graph compile failures write rank_0/om/analyze_fail.ir into the CWD; keep them out of the repo
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def pynative():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)


@pytest.fixture
def graph_mode():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


@pytest.fixture(scope="session")
def compiled_kernels():
    """The compiled CPU kernels, for tests of the kernel path. Skipped only where no compiler exists
    (no $CXX, no g++: the native ops are then the only path). Where one exists a failed build FAILS, with
    the compiler's message: otherwise a kernel-vs-native test would silently compare native with native."""
    from vig.ops.build import SOURCES, library

    cxx = os.environ.get("CXX") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no g++ (nor $CXX) to build the CPU kernels: only MindSpore's native ops can run")
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("vig.ops.build")
    logger.addHandler(handler)
    try:
        library.cache_clear()  # build (or find in the cache) now, so the failure's message is captured
        failed = [source for source in SOURCES if library(source) is None]
    finally:
        logger.removeHandler(handler)
    if failed:
        pytest.fail(f"{cxx} exists but building the CPU kernels {', '.join(failed)} failed:\n" + "\n".join(messages),
                    pytrace=False)
