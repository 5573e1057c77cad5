"""Faults beyond a clean single-process kill: the launcher's process group SIGKILLed under a 2-rank msrun
job, a second trainer on a state folder in use, and a disk that fills up while a state is written."""
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test_train_loop import TINY_YAML, write_digits
from vig.train import checkpoint as ckpt_io
from vig.train.lifetime import descendants, process_identity

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "workflow_scripts" / "train.py")
# one 8-channel block at 32x32: the graphs compile fast; 5 steps of 2 x 8 images per epoch
FAST_YAML = TINY_YAML.replace("channels: [16], blocks: [2]", "channels: [8], blocks: [1]").replace(
    "epochs: 3", "epochs: 2")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    data = write_digits(root / "digits", train_per_class=8, val_per_class=2)
    (root / "tiny.yaml").write_text(FAST_YAML)
    table = {"version": "1.0", "server_count": "1", "status": "completed", "server_list": [
        {"server_id": "127.0.0.1", "host_nic_ip": "reserve",
         "device": [{"device_id": str(i), "device_ip": "0.0.0.0", "rank_id": str(i)} for i in range(2)]}]}
    (root / "hccl_1s_2p.json").write_text(json.dumps(table))
    return root, data


def train_command(root, data, out, *extra, ranks=2):
    cmd = [sys.executable, TRAIN, "--vig_config", str(root / "tiny.yaml"), "--data_url", str(data),
           "--output_ckpt", str(out / "w.ckpt"), "--metrics", str(out / "m.jsonl"),
           "--state_root", str(out / "state"), "--log_dir", str(out / "logs"), *extra]
    if ranks == 2:
        cmd += ["--rank_table", str(root / "hccl_1s_2p.json"), "--master_port", str(9400 + os.getpid() % 500)]
    return cmd


def run_train(cmd, timeout=600):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "GLOG_v": "3"})


def metrics(out):
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "images/s")}
            for line in (out / "m.jsonl").read_text().splitlines()]


def weights(out):
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(out / "w.ckpt")).items()}


@pytest.fixture(scope="module")
def straight(job):
    """An uninterrupted 2-rank run: what a killed and resumed one must end equal to."""
    root, data = job
    out = root / "straight"
    done = run_train(train_command(root, data, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_sigkilled_msrun_job_leaves_no_worker_and_its_rerun_ends_as_an_uninterrupted_run(job, straight):
    root, data = job
    out = root / "killed"
    proc = subprocess.Popen(train_command(root, data, out), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "GLOG_v": "3"})
    log = out / "logs" / "train_rank0.log"
    try:
        deadline = time.time() + 400
        while not (log.is_file() and "epoch 2/2 step 2/5" in log.read_text()):  # mid-epoch 2
            assert proc.poll() is None and time.time() < deadline, "the job ended before epoch 2"
            time.sleep(0.1)
        tree = {pid: process_identity(pid) for pid in descendants([proc.pid])}
        workers = [pid for pid in tree if "--launcher" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) >= 2 and all(os.getsid(pid) != os.getsid(proc.pid) for pid in workers[-2:])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher's process group, as a closed terminal or the OOM killer
        proc.wait()
    deadline = time.time() + 10
    while (alive := [pid for pid, ident in tree.items() if process_identity(pid) == ident]) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive, f"still running 10 s after the launcher's group was killed: {alive}"

    rerun = run_train(train_command(root, data, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "state-e0001.ckpt: 1 epoch(s) done" in log.read_text()
    assert metrics(out) == metrics(straight) and len(metrics(out)) == 2
    resumed, reference = weights(out), weights(straight)
    assert resumed.keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_a_second_trainer_on_a_state_folder_in_use_is_refused_at_once(job, tmp_path):
    root, data = job
    cmd = train_command(root, data, tmp_path, ranks=2)
    script = runpy.run_path(TRAIN, run_name="train_script")  # its own parser and config: the same hash
    args = script["build_parser"]().parse_args(cmd[2:])
    cfg = script["config_from_args"](args)
    cfg["data_url"] = str(data)
    script["pretrained_path"](args, cfg, required=False)
    from vig.config import training_hash

    folder = ckpt_io.state_dir(tmp_path / "state", training_hash(cfg))
    holder = ckpt_io.lock_state_folder(folder)
    try:
        second = run_train(cmd, timeout=120)
    finally:
        holder.close()
    assert second.returncode == 2
    line = second.stderr.strip().splitlines()[-1]
    assert f"another trainer is using this state folder (pid {os.getpid()} on " in line and str(folder) in line
    assert not (tmp_path / "logs").exists()  # refused before anything was launched


def _mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _remount(path: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def _params(nbytes):
    import mindspore as ms

    return {"w": ms.Parameter(ms.Tensor(np.ones(nbytes // 4, np.float32)), name="w")}


def test_a_state_write_that_hits_enospc_removes_its_temp_and_keeps_the_previous_state(tmp_path, monkeypatch):
    folder = tmp_path / "disk"
    mounted = _mount_tmpfs(folder, 2 << 20)
    try:
        previous = ckpt_io.save_state(folder, 1, "abc", {"net": _params(1024)}, {})
        if not mounted:  # a writer that fails as a full disk does, after writing part of MindSpore's temp
            import mindspore as ms

            def full_disk(entries, name, **kwargs):
                Path(name).with_suffix(".tmp").write_bytes(b"\0" * 4096)
                raise OSError(28, "No space left on device")

            monkeypatch.setattr(ms, "save_checkpoint", full_disk)
        # the free-space check passes (the last state was small); the write itself runs out of space
        with pytest.raises(ckpt_io.DiskFullError) as err:
            ckpt_io.save_state(folder, 2, "abc", {"net": _params(4 << 20)}, {})
        assert sorted(os.listdir(folder)) == ["state-e0001.ckpt", "state-e0001.json"]
        assert ckpt_io.verify_state(previous).epoch == 1
        message = str(err.value)
        assert "\n" not in message and str(folder) in message and "`--resume auto`" in message
        assert "needs about" in message and "are free" in message
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)


def test_full_disk_stops_training_with_one_line_before_launching_and_the_rerun_resumes(job, straight, tmp_path):
    root, data = job
    state = tmp_path / "state"
    if not _mount_tmpfs(state, 64 << 20):
        pytest.skip("mounting a tmpfs needs root; the in-process ENOSPC test covers the write itself")
    try:
        (source,) = (straight / "state").iterdir()
        folder = state / source.name
        folder.mkdir()
        for name in ("state-e0001.ckpt", "state-e0001.json"):  # the 2-rank run after its first epoch
            (folder / name).write_bytes((source / name).read_bytes())
        size = (folder / "state-e0001.ckpt").stat().st_size
        _remount(state, (64 << 20) - shutil.disk_usage(state).free + size // 2)  # room for half a state
        assert shutil.disk_usage(state).free < size
        cmd = train_command(root, data, tmp_path)
        full = run_train(cmd)  # refused by the launcher: the last state tells the size of the next one
        assert full.returncode == 1 and not (tmp_path / "logs").exists()
        line = full.stderr.strip().splitlines()[-1]
        assert line.startswith(f"train.py: error: {folder}: disk full: the epoch-2 state needs about ") and "`--resume auto`" in line
        assert sorted(p.name for p in folder.glob("state-e*")) == ["state-e0001.ckpt", "state-e0001.json"]
        assert not [p for p in os.listdir(folder) if "tmp" in p]
        assert ckpt_io.verify_state(folder / "state-e0001.ckpt").epoch == 1
        _remount(state, 64 << 20)
        rerun = run_train(cmd)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "state-e0001.ckpt: 1 epoch(s) done" in (tmp_path / "logs" / "train_rank0.log").read_text()
        assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2]
    finally:
        subprocess.run(["umount", str(state)], check=False)


# The launcher's own processes (the Ascend path starts one per device): plain Python workers, no MindSpore
WORKER = """
import sys, time
sys.path.insert(0, {repo!r})
from vig.train.cli import run_cli
def work(argv):
    print("worker up", flush=True)
    time.sleep(float(argv[0]))
    return int(argv[1])
sys.exit(run_cli(work, sys.argv[1:], prog="worker"))
"""
LAUNCHER = """
import json, sys
sys.path.insert(0, {repo!r})
from vig.train.cli import run_cli
from vig.train.distributed import run_plan
sys.exit(run_cli(lambda argv: run_plan(json.loads(argv[0]), log=lambda line: None), sys.argv[1:], prog="launcher"))
"""


def per_device_plan(tmp_path, *workers):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO)))
    return [{"rank": rank, "env": {"RANK_ID": str(rank)}, "argv": ["python", str(script), str(sleep), str(code)],
             "log": str(tmp_path / f"worker_{rank}.log")} for rank, (sleep, code) in enumerate(workers)]


def worker_pids(launcher_pid, count, timeout=60):
    deadline = time.time() + timeout
    while len(pids := [p for p in descendants([launcher_pid]) if "worker.py" in Path(f"/proc/{p}/cmdline").read_text()]) < count:
        assert time.time() < deadline, "the workers did not start"
        time.sleep(0.05)
    return {pid: process_identity(pid) for pid in pids}


def start_launcher(tmp_path, plan):
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER.format(repo=str(REPO)))
    return subprocess.Popen([sys.executable, str(script), json.dumps(plan)], start_new_session=True,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_to_the_launcher_stops_every_worker_through_its_own_handler(tmp_path):
    launcher = start_launcher(tmp_path, per_device_plan(tmp_path, (120, 0), (120, 0)))
    workers = worker_pids(launcher.pid, 2)
    deadline = time.time() + 60
    while not all("worker up" in (tmp_path / f"worker_{rank}.log").read_text() for rank in (0, 1)):
        assert time.time() < deadline, "the workers did not start"
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
    assert "launcher: stopped by SIGTERM; every state written is complete" in launcher.stderr.read()
    assert not [p for p, ident in workers.items() if process_identity(p) == ident]
    for rank in (0, 1):  # each worker ran its `finally` blocks (atomic writes clean up there)
        assert "worker: stopped by SIGTERM" in (tmp_path / f"worker_{rank}.log").read_text()


def test_per_device_workers_die_with_their_launcher_and_with_a_failed_rank(tmp_path):
    launcher = start_launcher(tmp_path, per_device_plan(tmp_path, (120, 0), (120, 0)))
    workers = worker_pids(launcher.pid, 2)
    os.kill(launcher.pid, signal.SIGKILL)  # the launcher alone: its workers are not in any group it had
    launcher.wait()
    deadline = time.time() + 10
    while [p for p, ident in workers.items() if process_identity(p) == ident] and time.time() < deadline:
        time.sleep(0.05)
    assert not [p for p, ident in workers.items() if process_identity(p) == ident]

    from vig.train.distributed import run_plan

    start = time.time()  # rank 0 fails at once: rank 1 would otherwise wait in its first collective
    assert run_plan(per_device_plan(tmp_path, (0, 3), (120, 0)), log=lambda line: None) == 3
    assert time.time() - start < 60  # rank 1 (120 s) was stopped
