"""A rank table on disk: written atomically in hccl_tools' layout, read back validated."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from ..io import write_text
from .spec import DEFAULT_MAX_DEVICE_ID, RankTableError
from .validate import validate_rank_table


def write_rank_table(table: Mapping, path: str | os.PathLike) -> Path:
    """Write atomically the bytes hccl_tools.py and merge_hccl.py write for the same table:
    ``json.dump(indent=4)``, no trailing newline (the project's other JSON files end with one)."""
    return write_text(path, json.dumps(dict(table), indent=4))


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
