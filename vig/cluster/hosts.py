"""Server ids from host names: this host's IP (as hccl_tools guesses it) and a node's IP."""
from __future__ import annotations

import socket
from typing import Callable

from .spec import RankTableError

HostResolver = Callable[[str], str]


def local_server_id() -> str:
    """This host's IP, as hccl_tools guesses it (``gethostbyname(gethostname())``)."""
    hostname = socket.gethostname()
    try:
        return socket.gethostbyname(hostname)
    except OSError:
        raise RankTableError("server_id", f"cannot resolve this host's name {hostname!r}; set server_id") from None


def node_ip(host: str) -> str:
    """A Slurm node's IP (its server_id when ``resolve_hosts`` is on)."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        raise RankTableError("node list", f"cannot resolve node {host!r} to an IP address; give its server_id "
                                          "in device_map or set resolve_hosts: false") from None
