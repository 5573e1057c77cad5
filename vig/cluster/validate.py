"""What a valid hccl_tools rank table is: the layout (every scalar a string) and the topology."""
from __future__ import annotations

import ipaddress
from typing import Mapping

from .spec import DEFAULT_MAX_DEVICE_ID, PLACEHOLDER_DEVICE_IP, RankTableError

RANK_TABLE_VERSION = "1.0"
RANK_TABLE_STATUS = "completed"
HOST_NIC_IP = "reserve"


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
