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


# like the workflow's rank_table rule, resources from the profile's set-resources
rule rank_table:
    output:
        "results/cluster/rank_table.json",
    shell:
        "python {RANK_TABLE_CLI} --from-slurm --device-count 2 --output {output}"


rule train:
    input:
        "results/cluster/rank_table.json",
    output:
        "results/train.txt",
    resources:
        tasks=2,
        mpi="srun",
    shell:
        "{resources.mpi} -n {resources.tasks} bash -c 'echo rank=$SLURM_PROCID of $SLURM_NTASKS' > {output}"
"""


def test_snakemake_slurm_executor_with_the_project_profile(cluster, tmp_path):
    snakefile = TOY_SNAKEFILE.replace("{RANK_TABLE_CLI}", str(ROOT / "workflow_scripts" / "rank_table.py"))
    (tmp_path / "Snakefile").write_text(snakefile)
    # the project's profile exactly as shipped
    argv = [str(VENV_BIN / "snakemake"), "--workflow-profile", str(PROFILE), "--verbose"]
    done = subprocess.run(argv, cwd=tmp_path, env=job_env(ROOT), capture_output=True, text=True, timeout=150)
    report = f"snakemake exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, report + cluster.log_tails()
    # the rank table was built inside a Slurm job from its real node list
    table = load_rank_table(tmp_path / "results" / "cluster" / "rank_table.json")
    assert [s["server_id"] for s in table["server_list"]] == [socket.gethostbyname(cluster.host)]
    assert world_size(table) == 2
    ranks = sorted((tmp_path / "results" / "train.txt").read_text().split("\n"))
    assert [r for r in ranks if r] == ["rank=0 of 2", "rank=1 of 2"], report
    # what reached sbatch: the profile's set-resources for rank_table, the rule's own 2 tasks for
    # train, the profile's default-resources for the rest
    sbatch_lines = [line for line in done.stderr.splitlines() if "sbatch call:" in line]
    assert len(sbatch_lines) == 2, report
    table_call = next(line for line in sbatch_lines if "rule_rank_table" in line)
    assert "-t 5 --mem 500 --ntasks=1 --cpus-per-task=1" in table_call, table_call
    train_call = next(line for line in sbatch_lines if "rule_train" in line)
    assert "-t 60 --mem 4000 --ntasks=2" in train_call, train_call


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
