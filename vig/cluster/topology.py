"""The job's topology: planned from the config before any job runs, and read from a built table
(how many ranks, where a rank runs, which ranks a server holds)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import yaml

from .hccn_conf import DEFAULT_HCCN_CONF, parse_hccn_conf
from .servers import servers_from_entries
from .slurm import expand_nodelist, servers_from_slurm
from .spec import SERVER_DEVICE_COUNT, RankTableError, device_id_list


def planned_topology(section: Mapping) -> tuple[int, int]:
    """(servers, devices per server) the rank table built from the `cluster:` section will have.

    The scheduler needs the training job's shape when the workflow is planned, before the table is
    built (possibly on another host). The plan reads what the table will read where this host can see
    it (the `servers` entries, a `hccn_conf`, a Slurm `node_list` and `device_map`); what only the
    job's host knows falls back to the section's `nodes` (default 1) and an Ascend server's 8 devices.
    """
    source = section.get("source")
    where = "cluster config"
    if source == "servers":
        servers = servers_from_entries(section.get("servers"), f"{where} 'servers'")
        return len(servers), max(len(server.devices) for server in servers)
    nodes = section.get("nodes", 1)
    node_list = section.get("node_list") if source == "slurm" else None
    if node_list:
        names = expand_nodelist(node_list)
        if "nodes" in section and nodes != len(names):
            raise RankTableError(where, f"'nodes' is {nodes} but node_list {node_list!r} names {len(names)} nodes")
        nodes = len(names)
    ids = device_id_list(section.get("device_ids"), section.get("device_count"), where, default=None)
    if ids is not None:
        return nodes, len(ids)
    conf = section.get("hccn_conf", DEFAULT_HCCN_CONF)
    if source == "hccn_conf" and os.access(conf, os.R_OK):
        return nodes, len(parse_hccn_conf(conf))  # the table takes every device of the file
    device_map = section.get("device_map")
    if source == "slurm" and device_map and os.access(device_map, os.R_OK):
        names = expand_nodelist(node_list) if node_list else list(yaml.safe_load(Path(device_map).read_text()) or {})
        servers = servers_from_slurm(names, device_map=device_map, resolve_hosts=False)
        return nodes, max(len(server.devices) for server in servers)
    return nodes, SERVER_DEVICE_COUNT


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
