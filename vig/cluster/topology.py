"""Questions about a built table: how many ranks, where a rank runs, which ranks a server holds."""
from __future__ import annotations

from typing import Mapping

from .spec import RankTableError


def world_size(table: Mapping) -> int:
    """Number of ranks (devices) in the table."""
    return sum(len(server["device"]) for server in table["server_list"])


def _rank_entry(table: Mapping, rank: int) -> tuple[str, dict]:
    for server in table["server_list"]:
        for device in server["device"]:
            if int(device["rank_id"]) == rank:
                return server["server_id"], device
    raise RankTableError("rank table", f"no rank {rank}; ranks are 0..{world_size(table) - 1}")


def server_of_rank(table: Mapping, rank: int) -> str:
    """The server_id that hosts global ``rank``."""
    return _rank_entry(table, rank)[0]


def device_of_rank(table: Mapping, rank: int) -> int:
    """The device_id (DEVICE_ID for the launcher) of global ``rank`` on its server."""
    return int(_rank_entry(table, rank)[1]["device_id"])


def local_ranks(table: Mapping, server_id: str) -> list[int]:
    """Global rank ids on ``server_id``, ascending."""
    for server in table["server_list"]:
        if server["server_id"] == server_id:
            return sorted(int(device["rank_id"]) for device in server["device"])
    known = [server["server_id"] for server in table["server_list"]]
    raise RankTableError("rank table", f"no server {server_id!r}; servers are {known}")
