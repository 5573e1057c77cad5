"""Cluster topology: Ascend rank tables in the hccl_tools format, shared by every backend.

The file is the job's single source of topology, whatever the backend: training reads its
rank count from it. The layout is exactly what Huawei's ``hccl_tools.py`` / ``merge_hccl.py``
write, every scalar a string::

    {"version": "1.0", "server_count": "1",
     "server_list": [{"server_id": "10.0.0.1",
                      "device": [{"device_id": "0", "device_ip": "192.168.100.101", "rank_id": "0"}],
                      "host_nic_ip": "reserve"}],
     "status": "completed"}

Sources of the device list (each yields ``ServerSpec`` objects, merged in order with global
rank ids 0..N-1 as merge_hccl does):

* explicit servers: ``{"server_id": ..., "devices": [{"device_id": 0, "device_ip": ...}]}`` or,
  for CPU/GPU where no device NIC exists, ``{"server_id": ..., "device_count": 8}`` which
  writes ``PLACEHOLDER_DEVICE_IP`` ("0.0.0.0") for every device;
* a server's ``/etc/hccn.conf`` (``address_<id>=<ip>`` lines);
* ``hccn_tool -i <id> -ip -g`` (text after the first ':' of the first output line);
* Slurm: the job's compressed node list with each node's devices from a mapping file, a
  per-node hccn.conf copy, or a device count.

One file per concern: ``spec`` (what every source yields, the error), the sources ``servers``,
``hccn_conf``, ``hccn_tool``, ``slurm`` (with ``hosts`` for server ids), ``build`` (merge),
``validate`` (the format), ``table_file`` (disk), ``topology`` (the job's shape, planned from the
config or read from a table) and ``from_config`` (the workflow's entry point).
"""
from .build import build_rank_table
from .from_config import RANK_TABLE_CONFIG_KEYS, SOURCES, rank_table_from_config
from .hccn_conf import DEFAULT_HCCN_CONF, parse_hccn_conf, select_devices
from .hccn_tool import device_ips_from_hccn_tool, parse_hccn_tool_output, run_command
from .hosts import local_server_id
from .servers import servers_from_entries
from .slurm import expand_nodelist, servers_from_slurm
from .spec import DEFAULT_MAX_DEVICE_ID, PLACEHOLDER_DEVICE_IP, RankTableError, ServerSpec
from .table_file import load_rank_table, write_rank_table
from .topology import device_of_rank, local_ranks, planned_topology, server_of_rank, world_size
from .validate import validate_rank_table

__all__ = [
    "DEFAULT_HCCN_CONF",
    "DEFAULT_MAX_DEVICE_ID",
    "PLACEHOLDER_DEVICE_IP",
    "RANK_TABLE_CONFIG_KEYS",
    "RankTableError",
    "SOURCES",
    "ServerSpec",
    "build_rank_table",
    "device_ips_from_hccn_tool",
    "device_of_rank",
    "expand_nodelist",
    "load_rank_table",
    "local_ranks",
    "local_server_id",
    "parse_hccn_conf",
    "parse_hccn_tool_output",
    "planned_topology",
    "rank_table_from_config",
    "run_command",
    "select_devices",
    "server_of_rank",
    "servers_from_entries",
    "servers_from_slurm",
    "validate_rank_table",
    "world_size",
    "write_rank_table",
]
