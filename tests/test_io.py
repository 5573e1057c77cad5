"""vig.io: outputs appear whole or not at all, and a failed write leaves no temp file behind."""
import json
import os

import numpy as np
import pytest

from vig import io


def test_json_is_written_in_the_one_format_and_a_bad_value_writes_nothing(tmp_path):
    path = io.write_json(tmp_path / "out" / "a.json", {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(TypeError):
        io.write_json(path, {"not": object()})
    assert json.loads(path.read_text()) == {"b": 1, "a": [1, 2]}
    assert os.listdir(path.parent) == ["a.json"]


def test_a_failed_write_removes_its_temp_and_what_the_writer_derived_from_it(tmp_path):
    target = tmp_path / "state.ckpt"
    target.write_bytes(b"previous")
    with pytest.raises(OSError, match="No space"):
        with io.atomic_path(target, create=False) as tmp:
            assert tmp.suffix == ".ckpt" and tmp.parent == tmp_path and not tmp.exists()
            # what MindSpore does: write <name>.tmp, rename it to <name> at the end
            tmp.with_suffix(".tmp").write_bytes(b"half")
            raise OSError(28, "No space left on device")
    assert os.listdir(tmp_path) == ["state.ckpt"] and target.read_bytes() == b"previous"
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["state.ckpt"]


def test_mindspore_checkpoint_is_atomic_and_replaceable(tmp_path):
    import mindspore as ms

    path = tmp_path / "w.ckpt"
    for value in (1.0, 2.0):  # the second write replaces MindSpore's read-only file
        io.save_checkpoint([{"name": "w", "data": ms.Tensor(np.full(3, value, np.float32))}], path)
    np.testing.assert_array_equal(ms.load_checkpoint(str(path))["w"].asnumpy(), [2.0, 2.0, 2.0])
    assert os.listdir(tmp_path) == ["w.ckpt"]
