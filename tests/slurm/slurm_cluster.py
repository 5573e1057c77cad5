"""A real one-node Slurm cluster on this machine, for tests.

Recipe from shared/research/workflow_anchors.md section 4.3: Debian's slurm-wlm and munge,
``/etc/slurm/slurm.conf`` at the *default* path (the executor's jobstep strips ``SLURM_CONF``
from nested sruns), fake ``gpu:2`` and ``npu:8`` GRES backed by ``/dev/tty[0-9]`` (slurmd
drains a node whose GRES have no ``File=``), ``MinJobAge=600`` so ``squeue`` can report finished
jobs to Snakemake. Daemons run in the foreground as our children and are stopped by pid.

Usage::

    with slurm_cluster() as cluster:       # in pytest call require_slurm() first, to skip politely
        cluster.run(["sbatch", "--wait", ...])

or, in a test module, the module-scoped fixture ``slurm_session`` (import it from here).

Only one cluster per machine can exist (fixed ports, one /etc/slurm): a lock file serialises
concurrent test sessions, and daemons left behind by a killed session are stopped by the pids
it recorded.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SLURM_ETC = Path("/etc/slurm")
MUNGE_KEY = Path("/etc/munge/munge.key")
STATE_DIR = Path(tempfile.gettempdir()) / "vig-slurm-harness"
LOCK_FILE = STATE_DIR / "cluster.lock"
PIDS_FILE = STATE_DIR / "daemons.json"
CONF_MARKER = "# written by vig tests/slurm/slurm_cluster.py"
PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol")
PARTITION = "debug"
_RUNNING = False  # one cluster per process: a nested start would wait on our own lock


def log(message: str) -> None:
    print(f"[slurm harness] {message}", file=sys.stderr, flush=True)


def unavailable_reason() -> str | None:
    """Why this machine cannot run Slurm for tests, or None if it can."""
    if os.name != "posix" or os.geteuid() != 0:
        return "a local Slurm cluster needs root (slurmd, munged, /etc/slurm); not running as root"
    if not all(shutil.which(b) for b in BINARIES) and not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install slurm-wlm and munge"
    return None


def require_slurm() -> None:
    """pytest.skip with the reason on machines that cannot run Slurm; never hides other failures."""
    reason = unavailable_reason()
    if reason:
        print(f"SKIP Slurm tests: {reason}", flush=True)
        pytest.skip(reason)


def job_env(repo_root: Path) -> dict[str, str]:
    """Environment for jobs (sbatch --export=ALL passes it on): this venv first on PATH, the repo importable."""
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{venv_bin}:{os.environ.get('PATH', '')}", GLOG_v="3")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), env.get("PYTHONPATH", "")) if p)
    return env


def install_packages() -> None:
    if all(shutil.which(b) for b in BINARIES):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # wait for a concurrent apt/dpkg run instead of failing on its lock
    lock_wait = ["-o", "DPkg::Lock::Timeout=300"]
    for argv in (["apt-get", *lock_wait, "update"],
                 ["apt-get", *lock_wait, "install", "-y", "--no-install-recommends", *PACKAGES]):
        log("running " + " ".join(argv))
        started = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
                               f"{done.stderr[-3000:]}")
        log(f"... done in {time.monotonic() - started:.1f} s")
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        raise RuntimeError(f"installed {PACKAGES} but still missing {missing} on PATH")


def ensure_munge_key() -> None:
    # the package normally creates it; a minimal image may have skipped the postinst step
    if MUNGE_KEY.exists():
        return
    MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
    MUNGE_KEY.write_bytes(os.urandom(1024))
    shutil.chown(MUNGE_KEY, "munge", "munge")
    MUNGE_KEY.chmod(0o400)


def real_memory_mb() -> int:
    # below MemTotal so slurmd never reports less memory than configured (that drains the node)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.8)
    raise RuntimeError("no MemTotal in /proc/meminfo")


def short_hostname() -> str:
    return subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()


def slurm_conf(host: str, scratch: Path, cpus: int, memory_mb: int) -> str:
    return f"""{CONF_MARKER}
ClusterName=vigtest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={scratch}/munge/munge.socket.2
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
StateSaveLocation={scratch}/state
SlurmdSpoolDir={scratch}/spool
SlurmctldPidFile={scratch}/run/slurmctld.pid
SlurmdPidFile={scratch}/run/slurmd.pid
SlurmctldLogFile={scratch}/log/slurmctld.log
SlurmdLogFile={scratch}/log/slurmd.log
GresTypes=gpu,npu
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory={memory_mb} Gres=gpu:2,npu:8 State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def gres_conf(host: str) -> str:
    # character devices standing in for GPU and NPU device files
    return f"""{CONF_MARKER}
NodeName={host} Name=gpu File=/dev/tty[0-1]
NodeName={host} Name=npu File=/dev/tty[2-9]
"""


@dataclass
class SlurmCluster:
    scratch: Path
    host: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def logs(self) -> dict[str, Path]:
        names = ("munged", "slurmctld", "slurmd")
        files = {f"{n} (output)": self.scratch / "log" / f"{n}.out" for n in names}
        files.update({"munged": self.scratch / "munge" / "munged.log",
                      "slurmctld": self.scratch / "log" / "slurmctld.log",
                      "slurmd": self.scratch / "log" / "slurmd.log"})
        return files

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["<no file>"]
            parts.append(f"----- {name}: {path}\n" + "\n".join(text))
        return "\n".join(parts)

    def run(self, argv, timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run a Slurm client command; on failure the error carries its output and the daemon logs."""
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} exited {done.returncode}\nstdout:\n{done.stdout}\n"
                               f"stderr:\n{done.stderr}\n{self.log_tails()}")
        return done

    def start(self, timeout: float) -> None:
        for sub in ("munge", "state", "spool", "run", "log"):
            (self.scratch / sub).mkdir(parents=True, exist_ok=True)
        # munged runs as user munge: its socket dir must be traversable and owned by it
        self.scratch.chmod(0o755)
        shutil.chown(self.scratch / "munge", "munge", "munge")
        (self.scratch / "munge").chmod(0o755)
        munge = self.scratch / "munge"
        self._spawn("munged", ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "munged", "-F",
                               "-S", f"{munge}/munge.socket.2", f"--pid-file={munge}/munged.pid",
                               f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"])
        self._wait_for(lambda: (munge / "munge.socket.2").exists(), timeout, "munged to create its socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-c"])
        self._spawn("slurmd", ["slurmd", "-D"])
        self._wait_for(self._node_idle, timeout, f"node {self.host} to be idle in sinfo")

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.scratch / "log" / f"{name}.out", "w")
        self.processes[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        _record_pids(self.scratch, self.processes)
        log(f"started {name} (pid {self.processes[name].pid})")

    def _node_idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-n", self.host, "-o", "%T"], capture_output=True, text=True)
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            if dead:
                raise RuntimeError(f"waiting for {what}: daemon(s) exited early {dead}\n{self.log_tails()}")
            if ready():
                log(f"{what}: ready after {time.monotonic() - started:.1f} s")
                return
            time.sleep(0.2)
        state = subprocess.run(["sinfo", "-N", "-l"], capture_output=True, text=True)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\nsinfo -N -l:\n{state.stdout}"
                           f"{state.stderr}\n{self.log_tails()}")

    def stop(self) -> None:
        # reverse start order: slurmd, slurmctld, then munged which both authenticate through
        for name in reversed(list(self.processes)):
            _stop_pid(self.processes[name].pid, name, self.processes[name])
        self.processes.clear()
        PIDS_FILE.unlink(missing_ok=True)


def _record_pids(scratch: Path, processes: dict[str, subprocess.Popen]) -> None:
    record = {"scratch": str(scratch), "pids": {name: proc.pid for name, proc in processes.items()}}
    PIDS_FILE.write_text(json.dumps(record))


def _stop_pid(pid: int, name: str, proc: subprocess.Popen | None = None) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and not _pid_runs(pid, name):
            break
        time.sleep(0.1)
    else:
        log(f"{name} (pid {pid}) ignored SIGTERM; sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=10)
    log(f"stopped {name} (pid {pid})")


def _pid_runs(pid: int, name: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(Path(part.decode(errors="replace")).name == name for part in cmdline if part)


def _stop_leftovers() -> None:
    """Stop daemons recorded by an earlier session of this harness that was killed before cleanup."""
    if not PIDS_FILE.exists():
        return
    try:
        recorded = json.loads(PIDS_FILE.read_text())
    except (OSError, json.JSONDecodeError):
        recorded = {}
    # reverse start order, as in SlurmCluster.stop
    for name, pid in reversed(list(recorded.get("pids", {}).items())):
        if _pid_runs(int(pid), name):
            log(f"stopping {name} (pid {pid}) left by an earlier harness session")
            _stop_pid(int(pid), name)
    if recorded.get("scratch"):
        shutil.rmtree(recorded["scratch"], ignore_errors=True)
    PIDS_FILE.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive_lock(timeout: float):
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    STATE_DIR.chmod(0o755)  # munged (user munge) must traverse it to reach its socket
    with open(LOCK_FILE, "w") as handle:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"another test session holds {LOCK_FILE} for over {timeout:.0f} s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _config_files(host: str, scratch: Path, cpus: int):
    """Write /etc/slurm/{slurm,gres}.conf; a config not written by us is kept aside and put back."""
    SLURM_ETC.mkdir(parents=True, exist_ok=True)
    contents = {"slurm.conf": slurm_conf(host, scratch, cpus, real_memory_mb()), "gres.conf": gres_conf(host)}
    backups = {}
    for name, text in contents.items():
        path = SLURM_ETC / name
        if path.exists() and CONF_MARKER not in path.read_text(errors="replace"):
            backups[path] = path.with_name(name + ".vig-backup")
            os.replace(path, backups[path])
            log(f"moved the machine's {path} to {backups[path]} for the test")
        path.write_text(text)
    try:
        yield
    finally:
        # ours point at a scratch folder that is about to vanish
        for name in contents:
            (SLURM_ETC / name).unlink(missing_ok=True)
        for path, backup in backups.items():
            os.replace(backup, path)


@contextlib.contextmanager
def slurm_cluster(cpus: int = 2, timeout: float = 60):
    """Install (if needed), configure and start a one-node Slurm; yield a ``SlurmCluster``; stop it."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(f"cannot start Slurm: {reason}")
    global _RUNNING
    if _RUNNING:
        raise RuntimeError("a Slurm cluster from this process is already running; reuse it instead of nesting")
    install_packages()
    ensure_munge_key()
    with _exclusive_lock(timeout=600):
        _stop_leftovers()
        scratch = Path(tempfile.mkdtemp(prefix="vig-slurm-", dir=STATE_DIR))
        host = short_hostname()
        cluster = SlurmCluster(scratch=scratch, host=host)
        with _config_files(host, scratch, cpus):
            try:
                _RUNNING = True
                log(f"starting a one-node cluster on {host} in {scratch}")
                cluster.start(timeout)
                yield cluster
            finally:
                _RUNNING = False
                cluster.stop()
                shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_session():
    """pytest fixture: one running cluster for the tests of a module (about 2 s to start).

    Import it into a test module (``from slurm.slurm_cluster import slurm_session``) and use it as
    an argument; it skips (with the printed reason) only where Slurm cannot run here. Module
    scope, not session: two modules each importing a session fixture would wait on each other.
    """
    require_slurm()
    with slurm_cluster() as running:
        yield running
