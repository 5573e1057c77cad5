"""Source ``slurm``: one server per node of the job's compressed host list (``node[01-03,07]``),
each node's devices from a device map, a per-node hccn.conf or a device count."""
from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from .hccn_conf import parse_hccn_conf, select_devices
from .hosts import HostResolver, node_ip
from .servers import server_from_entry
from .spec import PLACEHOLDER_DEVICE_IP, RankTableError, ServerSpec, device_id_list


def _split_top_level(nodelist: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, char in enumerate(nodelist):
        if char == "[":
            depth += 1
            if depth > 1:
                raise RankTableError("node list", f"nested '[' at position {i} in {nodelist!r}")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise RankTableError("node list", f"unmatched ']' at position {i} in {nodelist!r}")
        elif char == "," and depth == 0:
            items.append(nodelist[start:i])
            start = i + 1
    if depth != 0:
        raise RankTableError("node list", f"unclosed '[' in {nodelist!r}")
    items.append(nodelist[start:])
    return items


def _expand_brackets(inner: str, nodelist: str) -> list[str]:
    values = []
    for part in inner.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise RankTableError("node list", f"bad range {part!r} in {nodelist!r}; expected N or N-M")
        high = high if dash else low
        if int(high) < int(low):
            raise RankTableError("node list", f"range {part!r} in {nodelist!r} runs backwards")
        # Slurm pads every number to the width of the lower bound: [08-10] -> 08 09 10
        values.extend(str(n).zfill(len(low)) for n in range(int(low), int(high) + 1))
    return values


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list (``node[01-03,07],gpu5``) -> host names, in order."""
    text = (nodelist or "").strip()
    if not text:
        raise RankTableError("node list", "is empty; run inside a Slurm job (SLURM_JOB_NODELIST) or set node_list")
    hosts: list[str] = []
    for item in _split_top_level(text):
        item = item.strip()
        if not item:
            raise RankTableError("node list", f"empty entry in {nodelist!r}")
        parts = re.split(r"(\[[^\]]*\])", item)
        choices = [_expand_brackets(p[1:-1], nodelist) if p.startswith("[") else [p] for p in parts if p]
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    duplicates = sorted(host for host, count in Counter(hosts).items() if count > 1)
    if duplicates:
        raise RankTableError("node list", f"{nodelist!r} names node(s) {duplicates} more than once")
    return hosts


def servers_from_slurm(nodes: Sequence[str], *, device_map: str | os.PathLike | None = None,
                       hccn_conf: str | None = None, device_ids: Sequence[int] | None = None,
                       device_count: int | None = None, resolve_hosts: bool = True,
                       resolve_host: HostResolver = node_ip) -> list[ServerSpec]:
    """One ``ServerSpec`` per Slurm node, in node-list order.

    Devices come from exactly one of: ``device_map`` (a JSON/YAML file ``{node: {server_id?,
    devices | device_count}}``), ``hccn_conf`` (a path, ``{node}`` replaced by the node name:
    each node's hccn.conf gathered on shared storage), or ``device_ids``/``device_count``
    alone (placeholder IPs, CPU/GPU).
    """
    if not nodes:
        raise RankTableError("node list", "is empty; the job has no nodes")
    if device_map is not None:
        if hccn_conf is not None or device_ids is not None or device_count is not None:
            raise RankTableError("slurm", "device_map already lists every node's devices; "
                                          "drop hccn_conf/device_ids/device_count")
        return _servers_from_device_map(nodes, device_map, resolve_hosts, resolve_host)
    ids = device_id_list(device_ids, device_count, "slurm", default=None)
    servers = []
    for node in nodes:
        server_id = resolve_host(node) if resolve_hosts else node
        if hccn_conf is not None:
            conf = hccn_conf.replace("{node}", node)
            devices = select_devices(parse_hccn_conf(conf), ids, f"{conf} (node '{node}')")
        elif ids is not None:
            devices = [(d, PLACEHOLDER_DEVICE_IP) for d in ids]
        else:
            raise RankTableError("slurm", "say where each node's devices come from: device_map, hccn_conf, "
                                          "or device_count/device_ids (placeholder IPs for CPU/GPU)")
        servers.append(ServerSpec(server_id, tuple(devices)))
    return servers


def _servers_from_device_map(nodes, device_map, resolve_hosts, resolve_host) -> list[ServerSpec]:
    source = str(device_map)
    try:
        mapping = yaml.safe_load(Path(device_map).read_text())
    except OSError as err:
        raise RankTableError(source, f"cannot read device map: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise RankTableError(source, f"not valid JSON/YAML: {err}") from None
    if not isinstance(mapping, Mapping):
        raise RankTableError(source, "expected a mapping {node name: {server_id?, devices | device_count}}")
    missing = [n for n in nodes if n not in mapping]
    if missing:
        raise RankTableError(source, f"no entry for node(s) {missing} of the job; the map has {sorted(mapping)}")
    servers = []
    for node in nodes:
        entry = mapping[node]
        default_id = None
        if not (isinstance(entry, Mapping) and "server_id" in entry):
            default_id = resolve_host(node) if resolve_hosts else node
        servers.append(server_from_entry(entry, f"node '{node}'", source, default_server_id=default_id))
    return servers
