"""Training state files: atomic, verified, keyed by config hash; corrupt ones are skipped, foreign ones refused."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vig.train import checkpoint as ckpt_io

REPO = Path(__file__).resolve().parents[1]


def _params(values):
    import mindspore as ms

    return {name: ms.Parameter(ms.Tensor(np.asarray(v, np.float32)), name=name) for name, v in values.items()}


def _save(folder, epoch, config_hash="abc", value=0.0):
    groups = {"net": _params({"w": [value, value + 1]}), "opt": _params({"global_step": [epoch * 10]})}
    return ckpt_io.save_state(folder, epoch, config_hash, groups, {"history": [{"epoch": epoch}]})


def test_state_round_trip_and_readonly_free_files(tmp_path):
    path = _save(tmp_path, 3, value=7.0)
    assert path.name == "state-e0003.ckpt" and ckpt_io.manifest_path(path).is_file()
    assert os.stat(path).st_mode & 0o200  # not MindSpore's 0400: the next run may replace it
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp.ckpt") or p.endswith(".tmp.json")]
    info = ckpt_io.verify_state(path)
    target = {"net": _params({"w": [0, 0]}), "opt": _params({"global_step": [0]})}
    extra = ckpt_io.load_state(info, target)
    assert info.epoch == 3 and extra["history"] == [{"epoch": 3}]
    np.testing.assert_array_equal(target["net"]["w"].asnumpy(), [7.0, 8.0])
    np.testing.assert_array_equal(target["opt"]["global_step"].asnumpy(), [30])


def test_corrupt_newest_state_falls_back_to_the_previous_one(tmp_path):
    _save(tmp_path, 1, value=1.0)
    _save(tmp_path, 2, value=2.0)
    newest = _save(tmp_path, 3, value=3.0)
    with open(newest, "r+b") as fh:  # truncate the newest checkpoint
        fh.truncate(newest.stat().st_size // 2)
    messages = []
    info = ckpt_io.pick_resume_state("auto", tmp_path, "abc", log=messages.append)
    assert info.epoch == 2
    assert any("state-e0003.ckpt" in m and "truncated" in m for m in messages)

    # same size but flipped bytes: caught by the checksum
    second = ckpt_io.state_path(tmp_path, 2)
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF
    second.write_bytes(bytes(data))
    messages.clear()
    info = ckpt_io.pick_resume_state("auto", tmp_path, "abc", log=messages.append)
    assert info.epoch == 1 and any("corrupt" in m for m in messages)

    # a checkpoint whose manifest was never written (killed between the two) is not a state
    _save(tmp_path, 4)
    ckpt_io.manifest_path(ckpt_io.state_path(tmp_path, 4)).unlink()
    assert ckpt_io.pick_resume_state("auto", tmp_path, "abc", log=messages.append).epoch == 1


def test_state_of_another_config_is_refused(tmp_path):
    path = _save(tmp_path, 1, config_hash="0123456789abcdef")
    with pytest.raises(ckpt_io.StateError, match="config hash 0123456789abcdef.*fedcba9876543210"):
        ckpt_io.pick_resume_state(str(path), tmp_path, "fedcba9876543210")
    with pytest.raises(ckpt_io.StateError, match="refusing to resume"):
        ckpt_io.pick_resume_state("auto", tmp_path, "fedcba9876543210")


def test_prune_keeps_exactly_the_last_n_and_never_the_best_weights(tmp_path):
    for epoch in range(1, 6):
        _save(tmp_path, epoch)
    (tmp_path / "best.ckpt").write_bytes(b"weights")
    ckpt_io.prune_states(tmp_path, keep_last=2)
    assert sorted(p.name for p in ckpt_io.list_states(tmp_path)) == ["state-e0004.ckpt", "state-e0005.ckpt"]
    assert sorted(p.name for p in tmp_path.glob("state-*.json")) == ["state-e0004.json", "state-e0005.json"]
    assert (tmp_path / "best.ckpt").exists()
    ckpt_io.prune_states(tmp_path, keep_last=0)  # the newest state (what resume needs) is never deleted
    assert [p.name for p in ckpt_io.list_states(tmp_path)] == ["state-e0005.ckpt"]


def test_cli_refuses_a_foreign_state_before_reading_data(tmp_path):
    """--resume PATH with a state from another config: a clear message, exit 2, no data read, no compile."""
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir(parents=True)
    state = _save(tmp_path / "states", 1, config_hash="0123456789abcdef")
    result = subprocess.run(
        [sys.executable, str(REPO / "workflow_scripts" / "train.py"), "--vig_config",
         str(REPO / "config" / "models" / "vig_demo.yaml"), "--data_url", str(tmp_path / "data"),
         "--resume", str(state)], capture_output=True, text=True, timeout=120, env={**os.environ, "GLOG_v": "3"})
    assert result.returncode == 2, result.stderr
    assert "refusing to resume" in result.stderr and "0123456789abcdef" in result.stderr
    assert "[data]" not in result.stdout  # failed before the (empty) data folder was listed
