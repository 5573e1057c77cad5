"""A real one-node Slurm: batch jobs, the rank table from a job's node list, and Snakemake's
Slurm executor with the project's profile. Skips only where the machine cannot run Slurm."""
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slurm.slurm_cluster import job_env, slurm_session  # noqa: F401 (slurm_session is a fixture)
from vig.cluster import expand_nodelist, load_rank_table, world_size

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PROFILE = ROOT / "profiles" / "slurm"


@pytest.fixture
def cluster(slurm_session):
    return slurm_session


def test_sbatch_runs_a_two_task_job(cluster, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --ntasks=2\n"
                      "srun -n 2 bash -c 'echo rank=$SLURM_PROCID of $SLURM_NTASKS on $SLURMD_NODENAME'\n")
    out = tmp_path / "job.out"
    cluster.run(["sbatch", "--wait", "-o", str(out), str(script)], cwd=tmp_path, timeout=60)
    lines = sorted(out.read_text().split("\n"))
    assert [line for line in lines if line] == [f"rank=0 of 2 on {cluster.host}", f"rank=1 of 2 on {cluster.host}"]


def test_nodelist_expansion_agrees_with_scontrol(cluster):
    for nodelist in ("node[01-03,07]", "gpu[8-10],cpu1", "rack[1-2]-n[1,3]", "n[098-101]"):
        hostnames = cluster.run(["scontrol", "show", "hostnames", nodelist]).stdout.split()
        assert expand_nodelist(nodelist) == hostnames, nodelist


def test_rank_table_from_inside_a_slurm_job(cluster, tmp_path):
    output = tmp_path / "cluster" / "rank_table.json"
    section = json.dumps({"source": "slurm", "device_count": 2})
    log = tmp_path / "rank_table.log"
    cluster.run(["sbatch", "--wait", "-o", str(log), "--wrap",
                 f"{VENV_BIN}/python {ROOT}/workflow_scripts/rank_table.py --config-json '{section}' "
                 f"--output {output}"], cwd=tmp_path, env=job_env(ROOT), timeout=60)
    assert "world size 2" in log.read_text()
    table = load_rank_table(output)
    assert world_size(table) == 2
    assert [s["server_id"] for s in table["server_list"]] == [socket.gethostbyname(cluster.host)]


TOY_SNAKEFILE = """
rule all:
    input:
        "results/train.txt",


rule prepare:
    output:
        "results/data.txt",
    shell:
        "hostname > {output}"


rule train:
    input:
        "results/data.txt",
    output:
        "results/train.txt",
    shell:
        "{resources.mpi} -n {resources.tasks} bash -c 'echo rank=$SLURM_PROCID of $SLURM_NTASKS' > {output}"
"""


def test_snakemake_slurm_executor_with_the_project_profile(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(textwrap.dedent(TOY_SNAKEFILE))
    # the project's profile as is; only the first status check comes sooner than on a real cluster
    argv = [str(VENV_BIN / "snakemake"), "--workflow-profile", str(PROFILE),
            "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs", "--verbose"]
    done = subprocess.run(argv, cwd=tmp_path, env=job_env(ROOT), capture_output=True, text=True, timeout=150)
    report = f"snakemake exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, report + cluster.log_tails()
    assert (tmp_path / "results" / "data.txt").read_text().strip() == cluster.host
    ranks = sorted((tmp_path / "results" / "train.txt").read_text().split("\n"))
    assert [r for r in ranks if r] == ["rank=0 of 2", "rank=1 of 2"], report
    # the profile's train block reached sbatch as a 2-task job; prepare got the default resources
    sbatch_lines = [line for line in done.stderr.splitlines() if "sbatch call:" in line]
    assert len(sbatch_lines) == 2, report
    train_call = next(line for line in sbatch_lines if "rule_train" in line)
    assert "--ntasks=2" in train_call and "--cpus-per-task=1" in train_call and "-t 120" in train_call
    prepare_call = next(line for line in sbatch_lines if "rule_prepare" in line)
    assert "--ntasks=1" in prepare_call and "--mem 4000" in prepare_call and "-t 60" in prepare_call


def test_skip_reasons_are_only_not_root_or_no_way_to_install(monkeypatch):
    from slurm import slurm_cluster as harness

    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    assert "needs root" in harness.unavailable_reason()
    monkeypatch.setattr(harness.os, "geteuid", lambda: 0)
    monkeypatch.setattr(harness.shutil, "which", lambda name: None)
    assert "no apt-get" in harness.unavailable_reason()
    # installed binaries make apt-get unnecessary
    monkeypatch.setattr(harness.shutil, "which", lambda name: None if name == "apt-get" else f"/usr/bin/{name}")
    assert harness.unavailable_reason() is None
