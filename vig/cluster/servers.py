"""Source ``servers``: servers listed in the config, each with its devices or a device count."""
from __future__ import annotations

from typing import Mapping

from .spec import PLACEHOLDER_DEVICE_IP, RankTableError, ServerSpec, parse_device_id, parse_device_ip, positive_int


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
        count = positive_int(entry["device_count"], f"{where}.device_count", source)
        return ServerSpec(server_id, tuple((i, PLACEHOLDER_DEVICE_IP) for i in range(count)))
    devices = entry["devices"]
    if not isinstance(devices, list) or not devices:
        raise RankTableError(source, f"{label}: 'devices' must be a non-empty list, got {devices!r}")
    pairs = []
    for i, device in enumerate(devices):
        device_where = f"{label} devices[{i}]"
        if not isinstance(device, Mapping) or set(device) != {"device_id", "device_ip"}:
            raise RankTableError(source, f"{device_where}: expected {{device_id, device_ip}}, got {device!r}")
        pairs.append((parse_device_id(device["device_id"], device_where, source),
                      parse_device_ip(device["device_ip"], device_where, source)))
    return ServerSpec(server_id, tuple(pairs))


def servers_from_entries(entries, source: str = "servers") -> list[ServerSpec]:
    if not isinstance(entries, list) or not entries:
        raise RankTableError(source, f"expected a non-empty list of servers, got {entries!r}")
    return [server_from_entry(entry, f"servers[{i}]", source) for i, entry in enumerate(entries)]
