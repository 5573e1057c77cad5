"""Merge servers into one hccl_tools table, as ``merge_hccl.py`` does."""
from __future__ import annotations

import itertools
from typing import Sequence

from .spec import DEFAULT_MAX_DEVICE_ID, ServerSpec
from .validate import HOST_NIC_IP, RANK_TABLE_STATUS, RANK_TABLE_VERSION, validate_rank_table


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
