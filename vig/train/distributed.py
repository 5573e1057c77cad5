"""Process topology: the rank table read once, MindSpore's communication init, and the launchers.

Launchers (the parent process builds the commands; every worker re-runs the same CLI with
`--launcher none` and finds its rank in the environment):
  msrun  (CPU/GPU): `msrun --worker_num=N --local_worker_num=L --node_rank=R --master_addr=A
         --master_port=P --join=True --log_dir=D python <script> <args> --launcher none`; workers see
         MS_ROLE/MS_WORKER_NUM/... and call `communication.init()`.
  ascend: one process per device of this server with RANK_TABLE_FILE, DEVICE_ID (physical id from
         the table), RANK_ID (global rank), RANK_SIZE (N from the table); workers call init("hccl").
"""
from __future__ import annotations

import functools
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .lifetime import Stopped, launcher_environment, set_parent_death_signal, stop_processes

LAUNCHERS = ("auto", "none", "msrun", "ascend")


class LaunchError(ValueError):
    """A launch request that cannot work (bad rank table, node index, launcher for the device)."""


@dataclass
class Topology:
    world_size: int = 1
    local_ranks: list = field(default_factory=lambda: [0])   # global rank ids on this server
    device_ids: list = field(default_factory=lambda: [0])    # physical device id of each local rank
    server_id: str = "localhost"
    table_path: str | None = None


def read_topology(rank_table: str | None, node_rank: int = 0) -> Topology:
    """World size and this server's ranks/devices from an hccl_tools rank table (1 rank without one)."""
    if not rank_table:
        return Topology()
    from ..cluster import RankTableError, device_of_rank, load_rank_table, local_ranks, world_size

    try:
        table = load_rank_table(rank_table)
    except RankTableError as exc:
        raise LaunchError(f"--rank_table: {exc}") from None
    except OSError as exc:
        raise LaunchError(f"--rank_table {rank_table}: cannot read ({exc})") from None
    servers = table["server_list"]
    if not 0 <= node_rank < len(servers):
        raise LaunchError(f"--node_rank {node_rank}: the rank table {rank_table} lists {len(servers)} server(s); "
                          f"expected 0..{len(servers) - 1}")
    server_id = servers[node_rank]["server_id"]
    ranks = local_ranks(table, server_id)
    return Topology(world_size(table), ranks, [device_of_rank(table, r) for r in ranks], server_id,
                    str(Path(rank_table).resolve()))


def resolve_launcher(requested: str, device_target: str, topology: Topology) -> str:
    if requested not in LAUNCHERS:
        raise LaunchError(f"--launcher {requested!r}: expected one of {', '.join(LAUNCHERS)}")
    if requested == "auto":
        if topology.world_size == 1:
            return "none"
        return "ascend" if device_target == "Ascend" else "msrun"
    if requested == "ascend" and device_target != "Ascend":
        raise LaunchError(f"--launcher ascend needs device_target Ascend (config has {device_target})")
    if requested == "msrun" and device_target == "Ascend" and not topology.table_path:
        raise LaunchError("--launcher msrun on Ascend needs --rank_table")
    return requested


def worker_argv(script: str, argv: list[str]) -> list[str]:
    """The worker's own command: the same arguments with `--launcher none` (last one wins)."""
    return ["python", script, *argv, "--launcher", "none"]


def msrun_command(topology: Topology, node_rank: int, master_addr: str, master_port: int, log_dir: str,
                  script: str, argv: list[str]) -> list[str]:
    return ["msrun", f"--worker_num={topology.world_size}", f"--local_worker_num={len(topology.local_ranks)}",
            f"--node_rank={node_rank}", f"--master_addr={master_addr}", f"--master_port={master_port}",
            "--join=True", f"--log_dir={log_dir}", *worker_argv(script, argv)]


def ascend_processes(topology: Topology, log_dir: str, script: str, argv: list[str]) -> list[dict]:
    """One {rank, env, argv, log} per local device: the environment the seed's shell script exported."""
    procs = []
    for rank, device in zip(topology.local_ranks, topology.device_ids):
        env = {"RANK_TABLE_FILE": topology.table_path, "DEVICE_ID": str(device), "RANK_ID": str(rank),
               "RANK_SIZE": str(topology.world_size), "DEVICE_NUM": str(len(topology.local_ranks))}
        procs.append({"rank": rank, "env": env, "argv": worker_argv(script, argv),
                      "log": str(Path(log_dir) / f"worker_{rank}.log")})
    return procs


def launch_plan(launcher: str, topology: Topology, *, node_rank: int, master_addr: str, master_port: int,
                log_dir: str, script: str, argv: list[str]) -> list[dict]:
    """What the launcher runs: [{env (additions), argv, log}] (one entry for msrun)."""
    if launcher == "msrun":
        return [{"rank": None, "env": {}, "log": None,
                 "argv": msrun_command(topology, node_rank, master_addr, master_port, log_dir, script, argv)}]
    if launcher == "ascend":
        return ascend_processes(topology, log_dir, script, argv)
    raise LaunchError(f"launcher {launcher!r} has no plan")


def format_plan(plan: list[dict]) -> str:
    """Shell-ready lines: `VAR=value ... command > log 2>&1`."""
    lines = []
    for proc in plan:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in proc["env"].items())
        cmd = shlex.join(proc["argv"])
        log = f" > {shlex.quote(proc['log'])} 2>&1" if proc["log"] else ""
        lines.append((env + " " if env else "") + cmd + log)
    return "\n".join(lines)


def child_environment(extra: dict) -> dict:
    """os.environ + the launcher's variables, with this interpreter's folder first on PATH (msrun
    starts workers with `python` from PATH) and GLOG_v=3 unless set."""
    env = dict(os.environ)
    env.setdefault("GLOG_v", "3")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def run_plan(plan: list[dict], log=print) -> int:
    """Start every process of the plan, wait for all; the first non-zero exit code (0 if all succeed).
    A process that fails stops the others (a dead rank would leave them waiting in a collective);
    `Stopped` (SIGINT/SIGTERM under run_cli) stops them all before it propagates."""
    procs, logs = [], []
    try:
        for proc in plan:
            log(f"[launch] {format_plan([proc])}")
            out = None
            if proc["log"]:
                Path(proc["log"]).parent.mkdir(parents=True, exist_ok=True)
                out = open(proc["log"], "w")
                logs.append(out)
            argv = [sys.executable if a == "python" and i == 0 else a for i, a in enumerate(proc["argv"])]
            # If this launcher dies, msrun gets SIGINT (its own stop: it kills its workers, scheduler and log
            # tails); a worker started here directly is killed. msrun gets its own process group, so that
            # Ctrl-C reaches only this launcher, which stops the workers gracefully (stop_processes).
            msrun = argv[0] == "msrun"
            death = signal.SIGINT if msrun else signal.SIGKILL
            procs.append(subprocess.Popen(argv, env=child_environment({**proc["env"], **launcher_environment()}),
                                          stdout=out, stderr=subprocess.STDOUT if out else None,
                                          process_group=0 if msrun else None,
                                          preexec_fn=functools.partial(set_parent_death_signal, death)))
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c]
            if failed and None in codes:
                log(f"[launch] a process exited with code {failed[0]}; stopping the others")
                stop_processes(procs, log=log)
            if failed or None not in codes:
                return failed[0] if failed else 0
            time.sleep(0.5)
    except Stopped as stop:
        log(f"[launch] {stop}: stopping every process of the job")
        stop_processes(procs, log=log)
        raise
    finally:
        for out in logs:
            out.close()


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    distributed: bool = False


def copy_from_rank0(params: list, rank: int) -> None:
    """Give every rank rank 0's values of `params` (one all-reduce of rank 0's values and zeros elsewhere,
    so the copy is exact). Call it on every rank of the job."""
    import numpy as np
    from mindspore import Tensor, ops

    from .evaluate import SumAcrossRanks

    if not params:
        return
    flat = np.concatenate([p.asnumpy().astype(np.float32).ravel() for p in params])
    if rank != 0:
        flat = np.zeros_like(flat)
    rank0 = SumAcrossRanks()(Tensor(flat)).asnumpy()
    offset = 0
    for p in params:
        size = int(np.prod(p.shape))
        # assign, not set_data: once the training step is compiled, set_data detaches an EMA shadow from
        # it, and the EMA of the BatchNorm statistics would stay frozen from the first epoch on
        ops.assign(p, Tensor(rank0[offset:offset + size].reshape(p.shape)).astype(p.dtype))
        offset += size


def in_launched_worker() -> bool:
    return "MS_ROLE" in os.environ or int(os.environ.get("RANK_SIZE", "1")) > 1


def device_id_of(device_id: int, env=os.environ) -> int:
    """The physical device of this process: the launcher's DEVICE_ID (from the rank table) when set,
    else the config's `device_id` (the seed's single-device `--device_id N`)."""
    return int(env.get("DEVICE_ID", device_id))


def init_process(device_target: str, graph_mode: int, expected_world: int, rank_table: str | None,
                 device_id: int = 0) -> Context:
    """Set device/mode, and under msrun or the Ascend launcher initialise communication and
    DATA_PARALLEL with mean gradients. Checks the cluster matches the rank table."""
    import mindspore as ms

    if device_target == "CPU" or "MS_ROLE" in os.environ:  # msrun assigns GPUs by local rank
        ms.set_device(device_target)
    else:
        ms.set_device(device_target, device_id_of(device_id))
    ms.set_context(mode=ms.GRAPH_MODE if graph_mode == 0 else ms.PYNATIVE_MODE)
    ms.set_deterministic(True)
    if device_target == "CPU":
        from ..runtime import set_cpu_threads

        # MindSpore defaults to 25 op threads; share this machine's cores among the local ranks
        set_cpu_threads(max(1, len(os.sched_getaffinity(0)) // max(1, expected_world)))
    if not in_launched_worker():
        if expected_world > 1:
            raise LaunchError(f"the rank table {rank_table} has {expected_world} ranks but this process was not "
                              f"started by a launcher; use --launcher auto/msrun/ascend")
        return Context()
    from mindspore import communication

    if "MS_ROLE" in os.environ:
        communication.init()
    else:
        communication.init("hccl")
    rank, size = communication.get_rank(), communication.get_group_size()
    if rank_table and size != expected_world:
        raise LaunchError(f"the job has {size} ranks but the rank table {rank_table} lists {expected_world}")
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=size)
    return Context(rank, size, size > 1)
