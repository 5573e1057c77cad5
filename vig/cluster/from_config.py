"""The workflow's entry point: a validated rank table from the config's ``cluster:`` section."""
from __future__ import annotations

import os
from typing import Mapping

from .build import build_rank_table
from .hccn_conf import DEFAULT_HCCN_CONF, parse_hccn_conf, select_devices
from .hccn_tool import CommandRunner, device_ips_from_hccn_tool, run_command
from .hosts import HostResolver, local_server_id, node_ip
from .servers import servers_from_entries
from .slurm import expand_nodelist, servers_from_slurm
from .spec import DEFAULT_MAX_DEVICE_ID, SERVER_DEVICE_COUNT, RankTableError, ServerSpec, device_id_list

SOURCES = ("servers", "hccn_conf", "hccn_tool", "slurm")
# Keys of the workflow config's `cluster:` section that each source understands.
_SOURCE_KEYS = {
    "servers": {"servers"},
    "hccn_conf": {"hccn_conf", "device_ids", "device_count", "server_id"},
    "hccn_tool": {"hccn_conf", "device_ids", "device_count", "server_id"},
    "slurm": {"node_list", "device_map", "hccn_conf", "device_ids", "device_count", "resolve_hosts"},
}
RANK_TABLE_CONFIG_KEYS = frozenset({"source", "max_device_id"}.union(*_SOURCE_KEYS.values()))


def rank_table_from_config(section: Mapping, *, environ: Mapping[str, str] = os.environ,
                           runner: CommandRunner = run_command, resolve_host: HostResolver = node_ip) -> dict:
    """Build a validated table from the workflow config's ``cluster:`` section (keys: docs/cluster.md)."""
    where = "cluster config"
    if not isinstance(section, Mapping):
        raise RankTableError(where, f"expected a mapping, got {section!r}")
    source = section.get("source")
    if source not in SOURCES:
        raise RankTableError(where, f"'source' must be one of {list(SOURCES)}, got {source!r}")
    allowed = _SOURCE_KEYS[source] | {"source", "max_device_id"}
    unexpected = sorted(set(section) - allowed)
    if unexpected:
        raise RankTableError(where, f"key(s) {unexpected} do not apply to source '{source}'; "
                                    f"allowed: {sorted(allowed)}")
    max_device_id = section.get("max_device_id", DEFAULT_MAX_DEVICE_ID)
    if isinstance(max_device_id, bool) or not isinstance(max_device_id, int) or max_device_id < 0:
        raise RankTableError(where, f"'max_device_id' must be a non-negative integer, got {max_device_id!r}")
    servers = _servers_for_source(source, section, environ, runner, resolve_host)
    return build_rank_table(servers, max_device_id=max_device_id, source=f"rank table from source '{source}'")


def _servers_for_source(source, section, environ, runner, resolve_host) -> list[ServerSpec]:
    if source == "servers":
        return servers_from_entries(section.get("servers"), "cluster config 'servers'")
    if source == "slurm":
        node_list = section.get("node_list") or environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST", "")
        resolve_hosts = section.get("resolve_hosts", True)
        if not isinstance(resolve_hosts, bool):
            raise RankTableError("cluster config", f"'resolve_hosts' must be true or false, got {resolve_hosts!r}")
        return servers_from_slurm(expand_nodelist(node_list), device_map=section.get("device_map"),
                                  hccn_conf=section.get("hccn_conf"), device_ids=section.get("device_ids"),
                                  device_count=section.get("device_count"), resolve_hosts=resolve_hosts,
                                  resolve_host=resolve_host)
    server_id = str(section.get("server_id") or "") or local_server_id()
    if source == "hccn_conf":
        conf = section.get("hccn_conf", DEFAULT_HCCN_CONF)
        ids = device_id_list(section.get("device_ids"), section.get("device_count"), str(conf), default=None)
        return [ServerSpec(server_id, tuple(select_devices(parse_hccn_conf(conf), ids, str(conf))))]
    ids = device_id_list(section.get("device_ids"), section.get("device_count"), "hccn_tool",
                         default=list(range(SERVER_DEVICE_COUNT)))
    return [ServerSpec(server_id, tuple(device_ips_from_hccn_tool(ids, runner, section.get("hccn_conf"))))]
