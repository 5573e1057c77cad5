#!/usr/bin/env python
"""Write an Ascend rank table (hccl_tools format) for the job's servers and devices.

Exactly one source (the config keys each flag sets are in brackets; docs/cluster.md lists them):

  --config_json '{"source": ...}'   the workflow config's `cluster:` section as JSON (used by the
                                    Snakemake rule `rank_table`); no other source flag with it
  --servers_json JSON|FILE          explicit servers [source: servers]: a JSON list, or a JSON/YAML
                                    file holding it, of {"server_id": "10.0.0.1", "devices":
                                    [{"device_id": 0, "device_ip": "192.168.100.101"}, ...]}
                                    or {"server_id": ..., "device_count": 8} (CPU/GPU: device_ip
                                    "0.0.0.0" marks "no device NIC")
  --hccn_conf FILE                  this server's hccn.conf, address_<id>=<ip> lines [source: hccn_conf]
  --from_hccn_tool                  ask `hccn_tool -i <id> -ip -g` per device [source: hccn_tool];
                                    --hccn_conf then is the fallback when hccn_tool fails (as hccl_tools)
  --from_slurm                      one server per node of the Slurm job [source: slurm]; devices from
                                    --device_map, --hccn_conf (with {node} in the path) or --device_count
  --device_count N (alone)          this host with N devices and placeholder IPs (CPU/GPU)

Examples:
  rank_table.py --hccn_conf /etc/hccn.conf --output hccl_8p.json
  rank_table.py --from_slurm --device_map /shared/npu_ips.yaml --output rank_table.json
  rank_table.py --config_json '{"source": "servers", "servers": [{"server_id": "127.0.0.1", "device_count": 2}]}' \\
      --output results/demo/cluster/rank_table.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, run_cli  # noqa: E402
from vig.cluster import (  # noqa: E402
    DEFAULT_MAX_DEVICE_ID,
    RankTableError,
    local_server_id,
    rank_table_from_config,
    world_size,
    write_rank_table,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = Parser(description=__doc__)
    source = parser.add_argument_group("sources (pick one)")
    source.add_argument("--config_json", metavar="JSON", help="the `cluster:` config section as a JSON object")
    source.add_argument("--servers_json", metavar="JSON|FILE", help="explicit servers: JSON list or a file holding it")
    source.add_argument("--hccn_conf", metavar="FILE",
                        help="hccn.conf path; with --from_slurm a pattern where {node} is the node name; "
                             "with --from_hccn_tool the fallback")
    source.add_argument("--from_hccn_tool", action="store_true", help="query `hccn_tool -i <id> -ip -g`")
    source.add_argument("--from_slurm", action="store_true",
                        help="servers = nodes of $SLURM_JOB_NODELIST (or --node_list), in order")
    devices = parser.add_argument_group("devices and servers")
    devices.add_argument("--device_count", type=int, metavar="N", help="use device ids 0..N-1 [device_count]")
    devices.add_argument("--device_ids", metavar="IDS", help="comma-separated device ids, e.g. 0,1,2,3 [device_ids]")
    devices.add_argument("--server_id", help="this server's id for --hccn_conf/--from_hccn_tool/--device_count "
                                             "(default: this host's IP, as hccl_tools) [server_id]")
    devices.add_argument("--node_list", help="Slurm node list such as node[01-02] (default $SLURM_JOB_NODELIST) "
                                             "[node_list]")
    devices.add_argument("--device_map", metavar="FILE",
                         help="--from_slurm: JSON/YAML {node: {server_id?, devices | device_count}} [device_map]")
    devices.add_argument("--no_resolve_hosts", action="store_true",
                         help="--from_slurm: keep node names as server_id instead of their IPs [resolve_hosts: false]")
    devices.add_argument("--max_device_id", type=int, default=None,
                         help=f"largest allowed device id (default {DEFAULT_MAX_DEVICE_ID}: 8 devices per Ascend "
                              "910 server) [max_device_id]")
    parser.add_argument("--output", required=True, metavar="PATH", help="rank table to write (atomically)")
    return parser.parse_args(argv)


def _load_servers(value: str):
    text = value.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise RankTableError("--servers_json", f"not valid JSON: {err}") from None
    try:
        return yaml.safe_load(Path(value).read_text())
    except OSError as err:
        raise RankTableError(value, f"--servers_json file cannot be read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise RankTableError(value, f"--servers_json file is not valid JSON/YAML: {err}") from None


def cluster_section_from_args(args: argparse.Namespace) -> dict:
    """Translate flags into the same `cluster:` mapping the workflow config holds."""
    chosen = [flag for flag, on in (("--servers_json", args.servers_json is not None),
                                    ("--from_hccn_tool", args.from_hccn_tool),
                                    ("--from_slurm", args.from_slurm)) if on]
    if args.config_json is not None:
        others = chosen + [f for f, v in (("--hccn_conf", args.hccn_conf), ("--device_count", args.device_count))
                           if v is not None]
        if others:
            raise RankTableError("arguments", f"--config_json already holds the whole section; drop {others}")
        try:
            section = json.loads(args.config_json)
        except json.JSONDecodeError as err:
            raise RankTableError("--config_json", f"not valid JSON: {err}") from None
        return section
    if len(chosen) > 1:
        raise RankTableError("arguments", f"pick one source, got {chosen}")
    optional = {
        "device_count": args.device_count,
        "device_ids": [int(d) if d.strip().isdigit() else d for d in args.device_ids.split(",")]
        if args.device_ids else None,
        "server_id": args.server_id,
        "node_list": args.node_list,
        "device_map": args.device_map,
        "resolve_hosts": False if args.no_resolve_hosts else None,
        "hccn_conf": args.hccn_conf,
        "max_device_id": args.max_device_id,
    }
    if args.servers_json is not None:
        section = {"source": "servers", "servers": _load_servers(args.servers_json)}
    elif args.from_slurm:
        section = {"source": "slurm"}
    elif args.from_hccn_tool:
        section = {"source": "hccn_tool"}
    elif args.hccn_conf is not None:
        section = {"source": "hccn_conf"}
    elif args.device_count is not None:
        server_id = args.server_id or local_server_id()
        section = {"source": "servers", "servers": [{"server_id": server_id, "device_count": args.device_count}]}
        optional.update(device_count=None, server_id=None)
    else:
        raise RankTableError("arguments", "no source: give --config_json, --servers_json, --hccn_conf, "
                                          "--from_hccn_tool, --from_slurm or --device_count (see --help)")
    section.update({key: value for key, value in optional.items() if value is not None})
    return section


def main(argv=None) -> int:
    return run_cli(write_table, argv, prog="rank_table.py", bad_input=(RankTableError,))


def write_table(argv=None) -> int:
    args = parse_args(argv)
    section = cluster_section_from_args(args)
    print(f"rank_table: building from source {section.get('source')!r}", flush=True)
    table = rank_table_from_config(section)
    path = write_rank_table(table, args.output)
    for server in table["server_list"]:
        ranks = [device["rank_id"] for device in server["device"]]
        print(f"rank_table: server {server['server_id']}: device(s) "
              f"{','.join(d['device_id'] for d in server['device'])}, ranks {ranks[0]}..{ranks[-1]}")
    print(f"rank_table: wrote {path} (server count {table['server_count']}, world size {world_size(table)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
