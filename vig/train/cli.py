"""Glue shared by workflow_scripts/train.py and evaluate.py: launcher options, up-front checks (config,
data folder, rank table, device_num, the device itself) that fail before any data is read or anything
is compiled, and the hand-off to a launcher or to this process."""
from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from pathlib import Path

from .. import cli as common
from ..cli import UsageError
from .distributed import (LAUNCHERS, LaunchError, Topology, format_plan, in_launched_worker,  # noqa: F401
                          launch_plan, read_topology, resolve_launcher, run_plan)
from .lifetime import Stopped, bind_to_launcher, stop_signals_raise


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_url", metavar="DIR",
                        help="ImageNet-format folder with train/<class>/ and val/<class>/ (overrides the YAML's data_url)")


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distributed launch")
    group.add_argument("--rank_table", metavar="JSON",
                       help="hccl_tools rank table: the job's topology (ranks = devices over all servers; local "
                            "workers = devices of server --node_rank). Without it: one process")
    group.add_argument("--launcher", default="auto", choices=LAUNCHERS,
                       help="auto: none for 1 rank, msrun on CPU/GPU, ascend on Ascend; none: run in this process "
                            "(what every launched worker runs)")
    group.add_argument("--master_addr", default=None,
                       help="msrun scheduler address (default: under a multi-node Slurm job the first node of "
                            "SLURM_JOB_NODELIST, otherwise 127.0.0.1)")
    group.add_argument("--master_port", type=int, default=8118, help="msrun scheduler port (default %(default)s)")
    group.add_argument("--node_rank", type=int, default=None,
                       help="index of this server in the rank table's server_list (default: SLURM_NODEID "
                            "under Slurm, otherwise 0)")
    group.add_argument("--log_dir", default="logs",
                       help="per-rank logs (worker_<rank>.log from the launcher, train_rank<rank>.log) "
                            "(default %(default)s)")
    group.add_argument("--dry_run_launch", action="store_true",
                       help="print the exact command lines and environments the launcher would run, then exit")


def check_data_dir(data_url: str, splits: tuple[str, ...]) -> None:
    for split in splits:
        folder = Path(data_url) / split
        if not folder.is_dir():
            raise UsageError(f"data folder {folder} not found: --data_url (or the YAML's data_url) must contain "
                             f"{'/ and '.join(splits)}/ with one sub-folder per class")


def slurm_defaults(node_rank: int | None, master_addr: str | None, env=os.environ) -> tuple[int, str]:
    """Node rank and msrun master when not given: under Slurm (one launcher per node, started by srun)
    the node's SLURM_NODEID and the first node of the job; otherwise 0 and this host."""
    if node_rank is None:
        node_rank = int(env.get("SLURM_NODEID", 0))
    if master_addr is None:
        nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if nodes and int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", 1))) > 1:
            from ..cluster import expand_nodelist

            master_addr = socket.gethostbyname(expand_nodelist(nodes)[0])
        else:
            master_addr = "127.0.0.1"
    return node_rank, master_addr


def check_device_num(cfg: dict, given: set[str], topology: Topology, rank_table: str | None) -> None:
    """The seed's device_num, when the YAML or a flag sets it, must be the job's device count: the rank
    table's (1 without one). Unset, the rank table decides (the seed's launcher exported DEVICE_NUM)."""
    if "device_num" in given and cfg["device_num"] != topology.world_size:
        source = f"the rank table {rank_table} lists {topology.world_size}" if rank_table else \
            "without --rank_table the job has 1"
        raise UsageError(f"key 'device_num' = {cfg['device_num']}: {source} device(s); set device_num to "
                         f"{topology.world_size} or drop it (the rank table is the job's topology)")


def process_plan(args, cfg: dict, script: str, argv: list[str], topology: Topology) -> tuple[str, list[dict]]:
    """(launcher, what it runs); launcher `none` is this process, on the config's device_id off CPU."""
    launcher = resolve_launcher(args.launcher, cfg["device_target"], topology)
    if launcher == "none":
        env = {} if cfg["device_target"] == "CPU" else {"DEVICE_ID": str(cfg["device_id"])}
        return launcher, [{"rank": 0, "env": env, "argv": ["python", script, *argv], "log": None}]
    return launcher, launch_plan(launcher, topology, node_rank=args.node_rank, master_addr=args.master_addr,
                                 master_port=args.master_port, log_dir=args.log_dir, script=script, argv=argv)


def maybe_launch(args, cfg: dict, script: str, argv: list[str], given: set[str] = frozenset()) -> int | None:
    """Start the launcher for a multi-rank job (returns its exit code), print its plan for
    --dry_run_launch or when the device is absent (then stop with the reason), or return None when this
    process should do the work itself."""
    args.node_rank, args.master_addr = slurm_defaults(args.node_rank, args.master_addr)
    topology = read_topology(args.rank_table, args.node_rank)
    check_device_num(cfg, given, topology, args.rank_table)
    launcher, plan = process_plan(args, cfg, script, argv, topology)
    if args.dry_run_launch:
        print(format_plan(plan))
        return 0
    common.stop_without_device(cfg["device_target"], format_plan(plan))
    if launcher == "none":
        return None
    code = run_plan(plan)
    reason = first_worker_error(args.log_dir) if code else None
    if reason:  # the one line a worker gave, last in this launcher's output (msrun ends with its own traceback)
        print(reason, file=sys.stderr)
    return code


def first_worker_error(log_dir: str) -> str | None:
    """The first `PROG: error: ...` line (what run_cli prints) in the workers' logs of this job."""
    for log in sorted(Path(log_dir).glob("worker_*.log")):
        with open(log, errors="replace") as fh:
            found = next((line.strip() for line in fh if re.match(r"\S+: error: ", line)), None)
        if found:
            return found
    return None


def launch_or_init(args, cfg: dict, script_file: str, argv: list[str]):
    """Either run the launcher for a multi-rank job and return (exit code, None), or set this process
    up as one rank and return (None, its context)."""
    script = sys.argv[0] if Path(sys.argv[0]).name == Path(script_file).name else script_file
    code = maybe_launch(args, cfg, script, argv, common.given_keys(args))
    if code is not None:
        return code, None
    from .distributed import init_process, read_topology

    topology = read_topology(args.rank_table, args.node_rank)
    return None, init_process(cfg["device_target"], cfg["graph_mode"], topology.world_size, args.rank_table,
                              cfg["device_id"])


def run_cli(main, argv=None, prog: str = "train.py") -> int:
    """Run `main(argv)`: bad input becomes one `prog: error: ...` message and exit status 2, a full disk
    the same with status 1, SIGINT/SIGTERM an orderly stop (128 + signal). A launched worker dies with
    its launcher."""
    from ..weights import WeightsError
    from .checkpoint import DiskFullError, StateError

    bind_to_launcher()
    try:
        with stop_signals_raise():
            return common.run_cli(main, argv, prog=prog, bad_input=(LaunchError, StateError, WeightsError),
                                  failures=(DiskFullError,))
    except Stopped as stop:
        print(f"{prog}: {stop}; every state written is complete, and `--resume auto` continues from the last one",
              file=sys.stderr)
        return stop.exit_code


def script_argv(argv) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)
