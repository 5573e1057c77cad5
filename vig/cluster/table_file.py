"""A rank table on disk: written atomically in hccl_tools' layout, read back validated."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

from .spec import DEFAULT_MAX_DEVICE_ID, RankTableError
from .validate import validate_rank_table


def write_rank_table(table: Mapping, path: str | os.PathLike) -> Path:
    """Write atomically (temp file in the same folder, then ``os.replace``) as hccl_tools does (indent 4)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(table, handle, indent=4)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_rank_table(path: str | os.PathLike, max_device_id: int = DEFAULT_MAX_DEVICE_ID) -> dict:
    """Read and validate a rank table file; errors name the file."""
    path = Path(path)
    try:
        table = json.loads(path.read_text())
    except OSError as err:
        raise RankTableError(str(path), f"cannot read rank table: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise RankTableError(str(path), f"not valid JSON: {err}") from None
    return validate_rank_table(table, max_device_id=max_device_id, source=str(path))
