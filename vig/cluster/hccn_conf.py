"""Source ``hccn_conf``: a server's ``/etc/hccn.conf`` (``address_<id>=<ip>`` lines), as hccl_tools reads it."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Mapping, Sequence

from .spec import RankTableError

DEFAULT_HCCN_CONF = "/etc/hccn.conf"


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
