"""Launchers: the exact Ascend and msrun command lines/environments produced from a rank table."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "config" / "models" / "vig_demo.yaml")


def _table(servers):
    rank, server_list = 0, []
    for server_id, device_ids in servers:
        devices = []
        for d in device_ids:
            devices.append({"device_id": str(d), "device_ip": f"192.168.{d}.{len(server_list) + 1}",
                            "rank_id": str(rank)})
            rank += 1
        server_list.append({"server_id": server_id, "device": devices, "host_nic_ip": "reserve"})
    return {"version": "1.0", "server_count": str(len(servers)), "server_list": server_list, "status": "completed"}


def _dry_run(tmp_path, table, *extra):
    (tmp_path / "data" / "train").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "val").mkdir(parents=True, exist_ok=True)
    table_path = tmp_path / "hccl_2s_6p.json"
    table_path.write_text(json.dumps(table, indent=4))
    args = [sys.executable, str(REPO / "workflow_scripts" / "train.py"), "--vig_config", DEMO,
            "--data_url", str(tmp_path / "data"), "--rank_table", str(table_path), "--log_dir", "L",
            "--dry_run_launch", *extra]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**os.environ, "GLOG_v": "3"})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines(), table_path


def test_ascend_launcher_one_process_per_device_of_this_server(tmp_path):
    # server 0 holds devices 0-3 (ranks 0-3), server 1 devices 4,5 (ranks 4,5): RANK_SIZE is 6, not 8
    table = _table([("10.0.0.1", [0, 1, 2, 3]), ("10.0.0.2", [4, 5])])
    lines, table_path = _dry_run(tmp_path, table, "--set", "device_target=Ascend", "--node_rank", "1")
    assert len(lines) == 2
    for line, (rank, device) in zip(lines, [(4, 4), (5, 5)]):
        words = shlex.split(line)
        env = dict(w.split("=", 1) for w in words[:5])
        assert env == {"RANK_TABLE_FILE": str(table_path.resolve()), "DEVICE_ID": str(device),
                       "RANK_ID": str(rank), "RANK_SIZE": "6", "DEVICE_NUM": "2"}
        command = words[5:]
        assert command[:2] == ["python", str(REPO / "workflow_scripts" / "train.py")]
        assert command[-5:] == ["--launcher", "none", ">", f"L/worker_{rank}.log", "2>&1"]
        assert "--set" in command and "device_target=Ascend" in command and "--node_rank" in command
        assert line.endswith(f"> L/worker_{rank}.log 2>&1")


def test_ascend_launcher_uses_the_physical_device_ids_of_the_table(tmp_path):
    table = _table([("10.0.0.1", [4, 6]), ("10.0.0.2", [0, 1])])
    lines, _ = _dry_run(tmp_path, table, "--set", "device_target=Ascend")
    envs = [dict(w.split("=", 1) for w in shlex.split(line)[:5]) for line in lines]
    assert [(e["DEVICE_ID"], e["RANK_ID"], e["RANK_SIZE"]) for e in envs] == [("4", "0", "4"), ("6", "1", "4")]


def test_msrun_command_for_cpu_two_servers(tmp_path):
    table = _table([("10.0.0.1", [0, 1]), ("10.0.0.2", [0, 1, 2])])
    lines, _ = _dry_run(tmp_path, table, "--node_rank", "1", "--master_addr", "10.0.0.1", "--master_port", "9000")
    assert len(lines) == 1
    words = shlex.split(lines[0])
    assert words[:8] == ["msrun", "--worker_num=5", "--local_worker_num=3", "--node_rank=1",
                         "--master_addr=10.0.0.1", "--master_port=9000", "--join=True", "--log_dir=L"]
    assert words[8:10] == ["python", str(REPO / "workflow_scripts" / "train.py")]
    assert words[-2:] == ["--launcher", "none"]


def test_rank_table_problems_fail_before_launch(tmp_path):
    table = _table([("10.0.0.1", [0, 1])])
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir(parents=True)
    bad = dict(table, server_count="3")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    base = [sys.executable, str(REPO / "workflow_scripts" / "train.py"), "--vig_config", DEMO,
            "--data_url", str(tmp_path / "data")]
    result = subprocess.run(base + ["--rank_table", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "server_count" in result.stderr and str(path) in result.stderr
    path.write_text(json.dumps(table))
    result = subprocess.run(base + ["--rank_table", str(path), "--node_rank", "1"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "--node_rank 1" in result.stderr
    result = subprocess.run(base + ["--rank_table", str(path), "--launcher", "ascend"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "device_target Ascend" in result.stderr


def test_slurm_supplies_node_rank_and_master_for_multi_node_jobs(monkeypatch):
    import socket

    from vig.train.cli import slurm_defaults

    assert slurm_defaults(None, None, env={}) == (0, "127.0.0.1")
    monkeypatch.setattr(socket, "gethostbyname", lambda host: {"node07": "10.0.0.7"}[host])
    env = {"SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "node[07-08]", "SLURM_JOB_NUM_NODES": "2"}
    assert slurm_defaults(None, None, env=env) == (1, "10.0.0.7")
    assert slurm_defaults(0, "192.168.0.1", env=env) == (0, "192.168.0.1")  # explicit flags win
    one_node = {"SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "node07", "SLURM_JOB_NUM_NODES": "1"}
    assert slurm_defaults(None, None, env=one_node) == (0, "127.0.0.1")
