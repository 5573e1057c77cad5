"""A multi-process job lives and dies as one: workers end with their launcher, signals stop every process.

msrun starts each worker in its own session, so killing the launcher's process group (a closed terminal,
the OOM killer, `kill -9` of the job) used to leave the workers training, holding the master port and
writing into the state folder. Three layers end them:
  - the kernel: every launched process asks for SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG;
    the launcher sets it for msrun and the Ascend workers it starts, each worker again for itself);
  - a watchdog thread in every worker that kills it within a second once the launcher (identified by
    pid and start time, passed in VIG_LAUNCHER) or its parent is gone, where prctl is unavailable or
    the parent died before the worker could ask;
  - the launcher turns SIGINT/SIGTERM into an orderly stop: SIGTERM to every process under it, which a
    worker turns into `Stopped` (atomic writes remove their temp files on the way out), then SIGKILL for
    whatever still runs after GRACE_SECONDS.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time

LAUNCHER_ENV = "VIG_LAUNCHER"
GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


class Stopped(BaseException):
    """SIGINT/SIGTERM asked this process to stop (BaseException: no `except Exception` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def process_identity(pid: int) -> str | None:
    """`pid:start time` of a live process (None if gone or a zombie): a pid reused later does not match."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return _identity_without_proc(pid)
    return None if fields[0] in ("Z", "X") else f"{pid}:{fields[19]}"


def _identity_without_proc(pid: int) -> str | None:
    if os.path.isdir("/proc"):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return str(pid)


def set_parent_death_signal(signum: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `signum` when the parent dies (Linux); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def launcher_environment() -> dict:
    """What a launcher adds to its workers' environment so they can watch it."""
    return {LAUNCHER_ENV: process_identity(os.getpid()) or str(os.getpid())}


def bind_to_launcher(poll_seconds: float = 0.5) -> None:
    """In a launched worker: die with the launcher. No-op in a process nobody launched."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if not launcher:
        return
    set_parent_death_signal(signal.SIGKILL)
    parent = os.getppid()
    launcher_pid = int(launcher.split(":")[0])

    def orphaned() -> bool:
        return os.getppid() != parent or process_identity(launcher_pid) != launcher

    if orphaned():  # the launcher died before we could ask the kernel
        os.kill(os.getpid(), signal.SIGKILL)

    def watch():
        while not orphaned():
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="vig-launcher-watchdog", daemon=True).start()


@contextlib.contextmanager
def stop_signals_raise():
    """Within the block SIGINT/SIGTERM raise `Stopped` in the main thread, so `finally` blocks and atomic
    writes clean up; the previous handlers come back afterwards."""
    def handler(signum, frame):
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pids: list[int]) -> list[int]:
    """Every process below `pids` (msrun's workers, its scheduler, its log tails), found through /proc."""
    if not os.path.isdir("/proc"):
        return []
    children, found, todo = _children_map(), [], list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pids, signum) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _alive(tree: dict) -> list[int]:
    return [pid for pid, ident in tree.items() if ident and process_identity(pid) == ident]


def _wait(done, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def stop_processes(popens: list[subprocess.Popen], grace: float = GRACE_SECONDS, log=print) -> None:
    """Stop the launched processes and everything under them: SIGTERM to the workers first (msrun
    kills them with SIGKILL when it goes), then to the launched processes, SIGKILL after `grace`."""
    tree = {pid: process_identity(pid) for pid in descendants([p.pid for p in popens])}
    _signal_all(tree, signal.SIGTERM)
    _wait(lambda: not _alive(tree), grace)
    _signal_all([p.pid for p in popens if p.poll() is None], signal.SIGTERM)
    if not _wait(lambda: not _alive(tree) and all(p.poll() is not None for p in popens), 2.0):
        left = _alive(tree) + [p.pid for p in popens if p.poll() is None]
        log(f"[launch] still running {grace:.0f}s after SIGTERM, killed: pids {left}")
        _signal_all(left, signal.SIGKILL)
    for p in popens:
        p.wait()
