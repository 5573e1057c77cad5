"""What every rank-table source yields (``ServerSpec``), the error they raise, and the checks of
one input value they share."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

# CPU/GPU servers have no device NIC; this address marks "no device IP" and is exempt from
# the uniqueness check (HCCL never reads it on those backends).
PLACEHOLDER_DEVICE_IP = "0.0.0.0"
# An Ascend 910 server holds 8 devices, ids 0..7.
DEFAULT_MAX_DEVICE_ID = 7
SERVER_DEVICE_COUNT = DEFAULT_MAX_DEVICE_ID + 1  # hccn_tool's default device list, the plan's fallback


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


def parse_device_id(value, where: str, source: str) -> int:
    # bool is an int subclass; `True` as a device id is a typo, not device 1
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise RankTableError(source, f"{where}: device_id must be a non-negative integer, got {value!r}")
    return int(value)


def parse_device_ip(value, where: str, source: str) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        raise RankTableError(source, f"{where}: device_ip must be an IPv4 address, got {value!r}") from None


def positive_int(value, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RankTableError(source, f"'{key}' must be a positive integer, got {value!r}")
    return value


def device_id_list(device_ids, device_count, source: str, default):
    if device_ids is not None and device_count is not None:
        raise RankTableError(source, "give device_ids or device_count, not both")
    if device_count is not None:
        return list(range(positive_int(device_count, "device_count", source)))
    if device_ids is None:
        return default
    if not isinstance(device_ids, (list, tuple)) or not device_ids:
        raise RankTableError(source, f"'device_ids' must be a non-empty list of integers, got {device_ids!r}")
    return [parse_device_id(d, "device_ids", source) for d in device_ids]
