"""Shared test setup: quiet MindSpore on CPU, small models, a scratch working directory."""
import os

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
