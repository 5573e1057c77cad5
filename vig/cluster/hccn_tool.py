"""Source ``hccn_tool``: each device's IP from ``hccn_tool -i <id> -ip -g``, hccn.conf as the fallback."""
from __future__ import annotations

import os
import subprocess
from typing import Callable, Sequence

from .hccn_conf import parse_hccn_conf, select_devices
from .spec import RankTableError, parse_device_ip

CommandRunner = Callable[[Sequence[str]], str]


def parse_hccn_tool_output(output: str, device_id: int) -> str:
    """Text after the first ':' of the first line of ``hccn_tool -i <id> -ip -g`` (``ipaddr:1.2.3.4``)."""
    first_line = output.splitlines()[0] if output.strip() else ""
    _, sep, value = first_line.partition(":")
    source = f"hccn_tool -i {device_id} -ip -g"
    if not sep:
        raise RankTableError(source, f"device {device_id}: expected 'ipaddr:<ip>' on the first line, "
                                     f"got {first_line!r}")
    return parse_device_ip(value, f"device {device_id}", source)


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
