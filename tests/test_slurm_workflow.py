"""The whole workflow under a real one-node Slurm with the project's profile: every step a Slurm job,
training one 2-task job (msrun, 2 CPU workers), the accuracy parity gate at the end."""
import json
import re
import subprocess
import sys
from pathlib import Path

from slurm.slurm_cluster import job_env, slurm_session  # noqa: F401 (slurm_session is a fixture)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "workflow" / "slurm.yaml"


def test_workflow_under_slurm_with_a_two_task_training_job(slurm_session, tmp_path):
    argv = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
            str(tmp_path), "--configfile", str(CONFIG), "--workflow-profile", str(ROOT / "profiles" / "slurm"),
            "--verbose"]
    done = subprocess.run(argv, cwd=tmp_path, env=job_env(ROOT), capture_output=True, text=True, timeout=600)
    report = f"snakemake exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-8000:]}"
    assert done.returncode == 0, report + slurm_session.log_tails()
    run = tmp_path / "results" / "slurm"
    # training was one Slurm job with 2 tasks, and ran 2 MindSpore ranks
    sbatch = [line for line in done.stderr.splitlines() if "sbatch call:" in line]
    train_call = next(line for line in sbatch if "rule_train" in line)
    assert "--ntasks=2" in train_call, train_call
    assert {"rule_verify_dataset", "rule_rank_table", "rule_train", "rule_evaluate", "rule_export",
            "rule_preprocess_310", "rule_infer"} <= set(re.findall(r"rule_\w+", " ".join(sbatch)))
    table = json.loads((run / "cluster" / "rank_table.json").read_text())
    assert sum(len(s["device"]) for s in table["server_list"]) == 2
    train_log = (run / "logs" / "train.log").read_text()
    assert "msrun --worker_num=2 --local_worker_num=2" in train_log, train_log[-2000:]
    digests = dict(re.findall(r"rank (\d) weights sha256 (\w+)", train_log))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], digests  # ranks stayed in sync
    metrics = [json.loads(x) for x in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    # every step's output, and the parity gate between evaluation and each deployed target
    evaluation = json.loads((run / "eval" / "metrics.json").read_text())
    for target in ("mindir", "onnx"):
        accuracy = json.loads((run / "infer" / target / "accuracy.json").read_text())
        assert evaluation["num_images"] == accuracy["num_images"] == 359
        assert evaluation["top1"] == accuracy["top1"] and evaluation["top5"] == accuracy["top5"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parity"] == "passed" and summary["images_compared"] == {"MINDIR": 359, "ONNX": 359}
    for picture in ("training_curves", "confusion_matrix", "accuracy", "benchmarks"):
        assert (run / "report" / f"{picture}.png").stat().st_size > 1000
