"""Ascend rank tables in the hccl_tools format: build, merge, validate, read.

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
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import socket
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import yaml

RANK_TABLE_VERSION = "1.0"
RANK_TABLE_STATUS = "completed"
HOST_NIC_IP = "reserve"
# CPU/GPU servers have no device NIC; this address marks "no device IP" and is exempt from
# the uniqueness check (HCCL never reads it on those backends).
PLACEHOLDER_DEVICE_IP = "0.0.0.0"
# An Ascend 910 server holds 8 devices, ids 0..7.
DEFAULT_MAX_DEVICE_ID = 7
DEFAULT_HCCN_CONF = "/etc/hccn.conf"

SOURCES = ("servers", "hccn_conf", "hccn_tool", "slurm")
# Keys of the workflow config's `cluster:` section that each source understands.
_SOURCE_KEYS = {
    "servers": {"servers"},
    "hccn_conf": {"hccn_conf", "device_ids", "device_count", "server_id"},
    "hccn_tool": {"hccn_conf", "device_ids", "device_count", "server_id"},
    "slurm": {"node_list", "device_map", "hccn_conf", "device_ids", "device_count", "resolve_hosts"},
}
RANK_TABLE_CONFIG_KEYS = frozenset({"source", "max_device_id"}.union(*_SOURCE_KEYS.values()))

CommandRunner = Callable[[Sequence[str]], str]
HostResolver = Callable[[str], str]


class RankTableError(ValueError):
    """A rank table or one of its inputs is wrong; lists every problem with its location."""

    def __init__(self, source: str, problems: str | Iterable[str]):
        self.source = str(source)
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = f"{self.source}: {self.problems[0]}"
        else:
            message = f"{self.source}: {len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


@dataclass(frozen=True)
class ServerSpec:
    """One server and its devices as ``(device_id, device_ip)`` pairs, in rank order."""

    server_id: str
    devices: tuple[tuple[int, str], ...]


# ----------------------------------------------------------------------------- value checks


def _device_id(value, where: str, source: str) -> int:
    # bool is an int subclass; `True` as a device id is a typo, not device 1
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise RankTableError(source, f"{where}: device_id must be a non-negative integer, got {value!r}")
    return int(value)


def _device_ip(value, where: str, source: str) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        raise RankTableError(source, f"{where}: device_ip must be an IPv4 address, got {value!r}") from None


def _positive_int(value, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RankTableError(source, f"'{key}' must be a positive integer, got {value!r}")
    return value


# ----------------------------------------------------------------------------- explicit servers


def server_from_entry(entry, where: str, source: str, default_server_id: str | None = None) -> ServerSpec:
    """One ``{"server_id", "devices" | "device_count"}`` mapping -> ``ServerSpec``."""
    if not isinstance(entry, Mapping):
        raise RankTableError(source, f"{where}: expected a mapping with server_id and devices, got {entry!r}")
    unknown = set(entry) - {"server_id", "devices", "device_count"}
    if unknown:
        raise RankTableError(source, f"{where}: unknown keys {sorted(unknown)}; expected server_id and "
                                     "either devices or device_count")
    server_id = str(entry.get("server_id", default_server_id) or "").strip()
    if not server_id:
        raise RankTableError(source, f"{where}: server_id is missing or empty")
    label = f"{where} (server '{server_id}')"
    if ("devices" in entry) == ("device_count" in entry):
        raise RankTableError(source, f"{label}: give exactly one of 'devices' (ids and IPs) or 'device_count'")
    if "device_count" in entry:
        count = _positive_int(entry["device_count"], f"{where}.device_count", source)
        return ServerSpec(server_id, tuple((i, PLACEHOLDER_DEVICE_IP) for i in range(count)))
    devices = entry["devices"]
    if not isinstance(devices, list) or not devices:
        raise RankTableError(source, f"{label}: 'devices' must be a non-empty list, got {devices!r}")
    pairs = []
    for i, device in enumerate(devices):
        device_where = f"{label} devices[{i}]"
        if not isinstance(device, Mapping) or set(device) != {"device_id", "device_ip"}:
            raise RankTableError(source, f"{device_where}: expected {{device_id, device_ip}}, got {device!r}")
        pairs.append((_device_id(device["device_id"], device_where, source),
                      _device_ip(device["device_ip"], device_where, source)))
    return ServerSpec(server_id, tuple(pairs))


def servers_from_entries(entries, source: str = "servers") -> list[ServerSpec]:
    if not isinstance(entries, list) or not entries:
        raise RankTableError(source, f"expected a non-empty list of servers, got {entries!r}")
    return [server_from_entry(entry, f"servers[{i}]", source) for i, entry in enumerate(entries)]


# ----------------------------------------------------------------------------- hccn.conf / hccn_tool


def parse_hccn_conf(path: str | os.PathLike) -> dict[int, str]:
    """``address_<id>=<ip>`` lines of an hccn.conf -> ``{device_id: ip}``.

    Other ``key=value`` lines (netmask_0, netdetect_0, ...) are ignored like hccl_tools does;
    a line without '=' or a broken ``address_`` line is an error naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise RankTableError(str(path), f"cannot read hccn.conf: {err.strerror or err}") from None
    addresses: dict[int, str] = {}
    problems = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"line {number}: malformed line {raw!r}; "
                            "expected key=value such as address_0=192.168.100.101")
            continue
        if not key.startswith("address_"):
            continue
        suffix = key[len("address_"):]
        if not suffix.isdigit():
            problems.append(f"line {number}: {key!r} must be address_<device id>, e.g. address_0")
            continue
        device_id = int(suffix)
        try:
            ip = str(ipaddress.IPv4Address(value.strip()))
        except ValueError:
            problems.append(f"line {number}: device {device_id}: {value.strip()!r} is not an IPv4 address")
            continue
        if device_id in addresses:
            problems.append(f"line {number}: device {device_id} has a second address {ip} "
                            f"(first: {addresses[device_id]})")
            continue
        addresses[device_id] = ip
    if problems:
        raise RankTableError(str(path), problems)
    if not addresses:
        raise RankTableError(str(path), "no address_<id>=<ip> lines found")
    return addresses


def select_devices(addresses: Mapping[int, str], device_ids: Sequence[int] | None,
                   source: str) -> list[tuple[int, str]]:
    """The requested devices (all, sorted by id, if ``device_ids`` is None) with their IPs."""
    if device_ids is None:
        return sorted(addresses.items())
    missing = [d for d in device_ids if d not in addresses]
    if missing:
        raise RankTableError(source, f"no address for device(s) {missing}; the file has devices {sorted(addresses)}")
    return [(d, addresses[d]) for d in device_ids]


def parse_hccn_tool_output(output: str, device_id: int) -> str:
    """Text after the first ':' of the first line of ``hccn_tool -i <id> -ip -g`` (``ipaddr:1.2.3.4``)."""
    first_line = output.splitlines()[0] if output.strip() else ""
    _, sep, value = first_line.partition(":")
    source = f"hccn_tool -i {device_id} -ip -g"
    if not sep:
        raise RankTableError(source, f"device {device_id}: expected 'ipaddr:<ip>' on the first line, "
                                     f"got {first_line!r}")
    return _device_ip(value, f"device {device_id}", source)


def run_command(argv: Sequence[str]) -> str:
    """Default command runner: stdout of ``argv``; raises RankTableError on any failure."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RankTableError(" ".join(argv), f"could not run: {err}") from None
    if done.returncode != 0:
        raise RankTableError(" ".join(argv), f"exit code {done.returncode}: {done.stderr.strip()[:500]}")
    return done.stdout


def device_ips_from_hccn_tool(device_ids: Sequence[int], runner: CommandRunner = run_command,
                              fallback_conf: str | os.PathLike | None = None) -> list[tuple[int, str]]:
    """Ask ``hccn_tool`` for each device's IP; like hccl_tools, fall back to hccn.conf if given."""
    pairs = []
    fallback = None
    for device_id in device_ids:
        argv = ["hccn_tool", "-i", str(device_id), "-ip", "-g"]
        try:
            pairs.append((device_id, parse_hccn_tool_output(runner(argv), device_id)))
        except RankTableError:
            if fallback_conf is None:
                raise
            fallback = fallback if fallback is not None else parse_hccn_conf(fallback_conf)
            pairs.extend(select_devices(fallback, [device_id], str(fallback_conf)))
    return pairs


def local_server_id() -> str:
    """This host's IP, as hccl_tools guesses it (``gethostbyname(gethostname())``)."""
    hostname = socket.gethostname()
    try:
        return socket.gethostbyname(hostname)
    except OSError:
        raise RankTableError("server_id", f"cannot resolve this host's name {hostname!r}; set server_id") from None


# ----------------------------------------------------------------------------- Slurm node lists


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


def _resolve(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError:
        raise RankTableError("node list", f"cannot resolve node {host!r} to an IP address; give its server_id "
                                          "in device_map or set resolve_hosts: false") from None


def servers_from_slurm(nodes: Sequence[str], *, device_map: str | os.PathLike | None = None,
                       hccn_conf: str | None = None, device_ids: Sequence[int] | None = None,
                       device_count: int | None = None, resolve_hosts: bool = True,
                       resolve_host: HostResolver = _resolve) -> list[ServerSpec]:
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
    ids = _device_id_list(device_ids, device_count, "slurm", default=None)
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


def _device_id_list(device_ids, device_count, source: str, default):
    if device_ids is not None and device_count is not None:
        raise RankTableError(source, "give device_ids or device_count, not both")
    if device_count is not None:
        return list(range(_positive_int(device_count, "device_count", source)))
    if device_ids is None:
        return default
    if not isinstance(device_ids, (list, tuple)) or not device_ids:
        raise RankTableError(source, f"'device_ids' must be a non-empty list of integers, got {device_ids!r}")
    return [_device_id(d, "device_ids", source) for d in device_ids]


# ----------------------------------------------------------------------------- table


def build_rank_table(servers: Sequence[ServerSpec], max_device_id: int = DEFAULT_MAX_DEVICE_ID,
                     source: str = "rank table") -> dict:
    """Merge servers into one validated hccl_tools table; rank ids 0..N-1 in server, then device order."""
    rank_ids = itertools.count()
    table = {
        "version": RANK_TABLE_VERSION,
        "server_count": str(len(servers)),
        "server_list": [
            {
                "server_id": server.server_id,
                "device": [{"device_id": str(device_id), "device_ip": ip, "rank_id": str(next(rank_ids))}
                           for device_id, ip in server.devices],
                "host_nic_ip": HOST_NIC_IP,
            }
            for server in servers
        ],
        "status": RANK_TABLE_STATUS,
    }
    return validate_rank_table(table, max_device_id=max_device_id, source=source)


def _string_field(record, key: str, label: str, problems: list) -> str | None:
    if key not in record:
        problems.append(f"{label}: '{key}' is missing")
        return None
    value = record[key]
    if not isinstance(value, str):
        problems.append(f"{label}: '{key}' must be a string (hccl_tools writes every value as a string), "
                        f"got {type(value).__name__} {value!r}")
        return None
    return value


def validate_rank_table(table, max_device_id: int = DEFAULT_MAX_DEVICE_ID, source: str = "rank table") -> dict:
    """Check the hccl_tools layout and topology; raise ``RankTableError`` listing every problem."""
    if not isinstance(table, Mapping):
        raise RankTableError(source, f"expected a JSON object, got {type(table).__name__}")
    problems: list[str] = []
    if table.get("version") != RANK_TABLE_VERSION:
        problems.append(f"'version' must be \"{RANK_TABLE_VERSION}\", got {table.get('version')!r}")
    if table.get("status") != RANK_TABLE_STATUS:
        problems.append(f"'status' must be \"{RANK_TABLE_STATUS}\", got {table.get('status')!r}")
    server_list = table.get("server_list")
    if not isinstance(server_list, list) or not server_list:
        raise RankTableError(source, problems + [f"'server_list' must be a non-empty list, got {server_list!r}"])
    server_count = _string_field(table, "server_count", "top level", problems)
    if server_count is not None and server_count != str(len(server_list)):
        problems.append(f"'server_count' is {server_count!r} but server_list has {len(server_list)} servers")

    seen_servers: set[str] = set()
    ip_owner: dict[str, str] = {}
    rank_owner: dict[int, str] = {}
    for index, server in enumerate(server_list):
        label = f"server_list[{index}]"
        if not isinstance(server, Mapping):
            problems.append(f"{label}: expected an object, got {server!r}")
            continue
        server_id = _string_field(server, "server_id", label, problems)
        if server_id is not None:
            label = f"server '{server_id}'"
            if server_id in seen_servers:
                problems.append(f"{label}: listed twice in server_list")
            seen_servers.add(server_id)
        _string_field(server, "host_nic_ip", label, problems)
        devices = server.get("device")
        if not isinstance(devices, list) or not devices:
            problems.append(f"{label}: 'device' must be a non-empty list, got {devices!r}")
            continue
        seen_device_ids: set[int] = set()
        for d_index, device in enumerate(devices):
            if not isinstance(device, Mapping):
                problems.append(f"{label} device[{d_index}]: expected an object, got {device!r}")
                continue
            device_label = f"{label} device[{d_index}]"
            device_id = _string_field(device, "device_id", device_label, problems)
            if device_id is not None:
                device_label = f"{label} device '{device_id}'"
                if not device_id.isdigit() or int(device_id) > max_device_id:
                    problems.append(f"{device_label}: device_id must be an integer in 0..{max_device_id}")
                elif int(device_id) in seen_device_ids:
                    problems.append(f"{device_label}: device_id listed twice on this server")
                else:
                    seen_device_ids.add(int(device_id))
            ip = _string_field(device, "device_ip", device_label, problems)
            if ip is not None:
                try:
                    ipaddress.IPv4Address(ip)
                except ValueError:
                    problems.append(f"{device_label}: device_ip {ip!r} is not an IPv4 address")
                else:
                    if ip != PLACEHOLDER_DEVICE_IP and ip in ip_owner:
                        problems.append(f"{device_label}: device_ip {ip} is already used by {ip_owner[ip]}")
                    ip_owner.setdefault(ip, device_label)
            rank_id = _string_field(device, "rank_id", device_label, problems)
            if rank_id is not None:
                if not rank_id.isdigit() or str(int(rank_id)) != rank_id:
                    problems.append(f"{device_label}: rank_id {rank_id!r} is not a non-negative integer")
                elif int(rank_id) in rank_owner:
                    problems.append(f"{device_label}: rank_id {rank_id} is already used by {rank_owner[int(rank_id)]}")
                else:
                    rank_owner[int(rank_id)] = device_label
    size = sum(len(s["device"]) for s in server_list if isinstance(s, Mapping) and isinstance(s.get("device"), list))
    missing = sorted(set(range(size)) - set(rank_owner))
    beyond = sorted(r for r in rank_owner if r >= size)
    if missing or beyond:
        problems.append(f"rank ids must be contiguous 0..{size - 1} over the {size} devices; missing {missing}"
                        + "".join(f"; rank {r} of {rank_owner[r]} is out of range" for r in beyond))
    if problems:
        raise RankTableError(source, problems)
    return dict(table)


# ----------------------------------------------------------------------------- file I/O and queries


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


# ----------------------------------------------------------------------------- workflow config


def rank_table_from_config(section: Mapping, *, environ: Mapping[str, str] = os.environ,
                           runner: CommandRunner = run_command, resolve_host: HostResolver = _resolve) -> dict:
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
        ids = _device_id_list(section.get("device_ids"), section.get("device_count"), str(conf), default=None)
        return [ServerSpec(server_id, tuple(select_devices(parse_hccn_conf(conf), ids, str(conf))))]
    ids = _device_id_list(section.get("device_ids"), section.get("device_count"), "hccn_tool",
                          default=list(range(DEFAULT_MAX_DEVICE_ID + 1)))
    return [ServerSpec(server_id, tuple(device_ips_from_hccn_tool(ids, runner, section.get("hccn_conf"))))]
