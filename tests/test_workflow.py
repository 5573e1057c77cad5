"""The Snakemake workflow end to end on a tiny config, in a scratch working directory.

One uninterrupted run is shared by the tests that inspect its outputs; the kill/resume test runs the same
config elsewhere, SIGKILLs it during training and checks that it resumes and ends identical.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "data" / "workflow" / "tiny.yaml"
STEPS = ["verify_dataset", "rank_table", "train", "evaluate", "export", "preprocess_310", "infer",
         "postprocess", "summary"]
TARGETS = ("mindir", "onnx")  # the deploy targets on CPU by default
PER_TARGET = ("export", "infer", "postprocess")  # one job each per target: logs/<step>_<target>.log
JOBS = [f"{step}_{target}" for step in STEPS for target in TARGETS if step in PER_TARGET] + \
    [step for step in STEPS if step not in PER_TARGET]


def snakemake_env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # rules call `python`
    env.setdefault("GLOG_v", "3")
    return env


def snakemake(workdir, *args, configfile=TINY, check=True, timeout=900, background=False, **popen_kwargs):
    """Run snakemake on the workflow in `workdir`; `background=True` returns the Popen instead."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(configfile), *args]
    if background:
        return subprocess.Popen(cmd, env=snakemake_env(), **popen_kwargs)
    proc = subprocess.run(cmd, env=snakemake_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_json(path):
    return json.loads(Path(path).read_text())


def checkpoint_arrays(path):
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    snakemake(workdir, "--cores", "2")
    return workdir / "results" / "tiny"


# ------------------------------------------------------------------------------------------------
# Fast checks: no job runs
# ------------------------------------------------------------------------------------------------
def test_lint_and_format_are_clean():
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, env=snakemake_env(),
                          capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent)) or "snakefmt"
    fmt = subprocess.run([snakefmt, "--check", "Snakefile", "rules/"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_imagenet_dry_run_lists_every_step_with_the_seed_settings(tmp_path):
    proc = snakemake(tmp_path, "-n", "-p", "--cores", "8", configfile=REPO / "config" / "imagenet_vig_s.yaml")
    out = proc.stdout + proc.stderr
    for step in STEPS:
        assert f"rule {step}:" in out or f"localrule {step}:" in out, step
    train_cmd = next(line for line in out.splitlines() if "workflow_scripts/train.py" in line)
    assert "config/models/vig_s_patch16_224.yaml" in train_cmd
    assert "--data_url /data/imagenet" in train_cmd
    assert '"source": "hccn_conf"' in out and '"device_count": 8' in out
    seed = yaml.safe_load((REPO / "config" / "models" / "vig_s_patch16_224.yaml").read_text())
    assert (seed["epochs"], seed["batch_size"], seed["base_lr"], seed["device_target"]) == (300, 16, 0.002, "Ascend")
    assert "export/vig_s_patch16_224.mindir" in out and ".onnx" not in out  # Ascend deploys the MINDIR only
    infer_cmd = next(line for line in out.splitlines() if "workflow_scripts/infer.py" in line)
    assert "--device_target Ascend" in infer_cmd  # the MINDIR runs on the Ascend device, not the host CPU


def test_parity_tolerance_reaches_the_gate_only_when_set(tmp_path):
    def summary_command(*config):
        out = snakemake(tmp_path, "-n", "-p", "--cores", "2", *config).stdout
        return next(line for line in out.splitlines() if "workflow_scripts/summary.py" in line)

    assert "--near_tie_tolerance" not in summary_command()  # default: the evaluation's measured tolerance
    assert "--near_tie_tolerance 0.05 " in summary_command("--config", 'deploy={"parity_tolerance": 0.05}')


def test_mindir_only_target_builds_no_onnx(tmp_path):
    out = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--config", 'deploy={"targets": ["mindir"]}').stdout
    assert "onnx" not in out.lower(), [line for line in out.splitlines() if "onnx" in line.lower()]
    assert {"export", "infer", "postprocess"} <= planned_jobs(out)
    summary = next(line for line in out.splitlines() if "workflow_scripts/summary.py" in line)
    assert summary.count("--deployed") == 1 and "--deployed MINDIR results/tiny/infer/mindir/accuracy.json" in summary


def test_imagenet_dry_run_under_the_slurm_profile_asks_for_the_seeds_8_devices(tmp_path):
    proc = snakemake(tmp_path, "-n", "--workflow-profile", str(REPO / "profiles" / "slurm"),
                     configfile=REPO / "config" / "imagenet_vig_s.yaml")
    out = proc.stdout + proc.stderr
    train = out[out.index("rule train:"):]
    resources = next(line for line in train.splitlines() if line.strip().startswith("resources:"))
    assert "gres=npu:8" in resources and "tasks=1" in resources
    assert "runtime=15000" in resources


def test_multi_node_training_starts_one_launcher_per_node(tmp_path):
    two_nodes = yaml.safe_load(TINY.read_text())
    two_nodes["cluster"] = {"source": "servers", "servers": [{"server_id": "10.0.0.1", "device_count": 2},
                                                             {"server_id": "10.0.0.2", "device_count": 2}]}
    configfile = tmp_path / "two_nodes.yaml"
    configfile.write_text(yaml.safe_dump(two_nodes))
    out = snakemake(tmp_path, "-n", "-p", "--cores", "2", configfile=configfile).stdout
    train = out[out.index("rule train:"):]
    resources = next(line for line in train.splitlines() if line.strip().startswith("resources:"))
    assert "nodes=2" in resources and "tasks=2" in resources
    command = next(line for line in train.splitlines() if "workflow_scripts/train.py" in line)
    assert "srun --nodes=2 --ntasks-per-node=1" in command and "--master_addr" not in command


@pytest.mark.parametrize("override,message", [
    ('train_overrides={"epochz": 3}', "unknown key(s) epochz"),
    ('train_overrides={"base_lr": 0}', "key 'base_lr' = 0"),
    ("run_name=a/b", "run_name"),
    ('infer={"batch_size": 0}', "batch_size"),
    ('deploy={"targets": ["mindir", "tflite"]}', "'tflite' is not one of ['mindir', 'onnx']"),
    ('deploy={"parity_tolerance": -1}', "On instance['deploy']['parity_tolerance']"),
])
def test_config_error_stops_the_run_before_any_job(tmp_path, override, message):
    proc = snakemake(tmp_path, "--cores", "1", "--config", override, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists(), "no job may run on a bad config"


# ------------------------------------------------------------------------------------------------
# The whole workflow
# ------------------------------------------------------------------------------------------------
def test_every_step_produces_its_outputs(finished_run):
    manifest = read_json(finished_run / "dataset" / "manifest.json")
    assert manifest["classes"] == [str(d) for d in range(10)]
    assert manifest["counts"]["train"]["total"] + manifest["counts"]["val"]["total"] == 1797
    table = read_json(finished_run / "cluster" / "rank_table.json")
    assert table["version"] == "1.0" and table["server_count"] == "1"
    metrics = [json.loads(line) for line in (finished_run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    evaluation = read_json(finished_run / "eval" / "metrics.json")
    assert evaluation["num_images"] == len(read_json(finished_run / "infer" / "preprocess_Result" /
                                                     "imagenet_label.json"))
    assert np.asarray(evaluation["confusion_matrix"]).sum() == evaluation["num_images"]
    summary = read_json(finished_run / "summary.json")
    assert summary["parity"] == "passed" and summary["images_compared"] == {"MINDIR": 359, "ONNX": 359}
    sensitivity = read_json(finished_run / "eval" / "predictions.json")["rounding_sensitivity"]
    scale = max(abs(v) for r in read_json(finished_run / "eval" / "predictions.json")["images"] for v in r["logits"])
    assert summary["rounding_sensitivity"] == sensitivity >= 0
    assert summary["near_tie_tolerance"] == max(2 * sensitivity, 1e-4 * scale)
    assert set(summary["near_ties"]) == {"MINDIR", "ONNX"}
    eval_row, *deployed_rows = summary["accuracy"]
    assert [row["model"] for row in deployed_rows] == ["deployed (MINDIR)", "deployed (ONNX)"]
    evaluated = read_json(finished_run / "eval" / "predictions.json")["images"]
    assert sum(r["top"][0] == r["label"] for r in evaluated) == eval_row["correct_top1"]
    for target, row in zip(TARGETS, deployed_rows):  # the same .bin inputs, the same result-file format
        assert (finished_run / "export" / f"vig_ti_patch16_224.{target}").stat().st_size > 0
        results = sorted((finished_run / "infer" / target / "result_Files").glob("*_0.bin"))
        assert len(results) == evaluation["num_images"]
        assert results[0].stat().st_size == 4 * 10  # 10 float32 logits, the seed's 310 format
        accuracy = read_json(finished_run / "infer" / target / "accuracy.json")
        assert accuracy["top1"] == pytest.approx(evaluation["top1"], abs=0)
        assert eval_row["correct_top1"] == row["correct_top1"] == round(evaluation["top1"] * 359)
        assert eval_row["correct_top5"] == row["correct_top5"]
        deployed = read_json(finished_run / "infer" / target / "predictions.json")["images"]
        assert sorted(r["image"] for r in evaluated) == [r["image"] for r in deployed] == [p.name[:-6] for p in results]
        latency = read_json(finished_run / "infer" / target / "latency.json")
        assert row["ms_per_image"] == latency["mean_ms"] > 0 and latency["file_format"] == target.upper()
    assert read_json(finished_run / "infer" / "onnx" / "latency.json")["runtime"].endswith("CPU, 2 threads")
    for picture in ("training_curves", "confusion_matrix", "accuracy", "benchmarks", "patch_graph", "graph_health"):
        assert (finished_run / "report" / f"{picture}.png").stat().st_size > 1000
    health = read_json(finished_run / "graph" / "health.json")
    assert health["images"] == [f"{c}/{sorted(os.listdir(finished_run / 'dataset' / 'images' / 'val' / str(c)))[0]}"
                                for c in range(4)]
    assert [(b["block"], b["k"], b["grid"]) for b in health["blocks"]] == [(0, 3, [4, 4]), (1, 6, [4, 4])]
    assert all(b["mean_neighbour_distance"] > 0 and -1 <= b["mean_cosine_similarity"] <= 1 for b in health["blocks"])
    for job in JOBS:
        assert (finished_run / "benchmarks" / f"{job}.tsv").exists()
        assert (finished_run / "logs" / f"{job}.log").exists()


def test_second_run_has_nothing_to_do(finished_run):
    proc = snakemake(finished_run.parent.parent, "--cores", "2")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_inference_key_reruns_only_what_depends_on_it(finished_run):
    proc = snakemake(finished_run.parent.parent, "-n", "--cores", "2", "--config", 'infer={"batch_size": 8}')
    jobs = planned_jobs(proc.stdout)
    assert {"infer", "postprocess", "summary"} <= jobs
    assert not jobs & {"train", "evaluate", "export", "preprocess_310", "verify_dataset", "rank_table"}


def test_training_key_reruns_training_and_everything_after(finished_run):
    proc = snakemake(finished_run.parent.parent, "-n", "--cores", "2", "--config",
                     'train_overrides={"base_lr": 0.002}')
    jobs = planned_jobs(proc.stdout)
    assert {"train", "evaluate", "export", "infer", "postprocess", "summary"} <= jobs
    assert not jobs & {"verify_dataset", "rank_table", "preprocess_310", "prepare_demo_dataset"}


def planned_jobs(stdout):
    jobs = set()
    in_table = False
    for line in stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if not parts[0].startswith("-"):
                jobs.add(parts[0])
    return jobs


def test_report_is_self_contained(finished_run):
    report = finished_run.parent.parent / "report.html"
    snakemake(finished_run.parent.parent, "--report", str(report))
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 50_000 and "training_curves.png" in html


def test_parity_gate_stops_on_two_swapped_deployed_outputs_naming_the_target(finished_run, tmp_path):
    """The real run's ONNX result files with two images' logits swapped, beside its intact MINDIR ones:
    the gate fails naming ONNX and both images, even when the correct counts happen to stay equal."""
    infer = finished_run / "infer"
    deployed = read_json(infer / "onnx" / "predictions.json")["images"]
    first = deployed[0]
    second = next(r for r in deployed if r["top"][0] != first["top"][0])
    results = tmp_path / "result_Files"
    shutil.copytree(infer / "onnx" / "result_Files", results)
    a, b = results / f"{first['image']}_0.bin", results / f"{second['image']}_0.bin"
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)
    script = [sys.executable, str(REPO / "workflow_scripts" / "postprocess.py")]
    subprocess.run(script + ["--result_dir", str(results), "--labels",
                             str(infer / "preprocess_Result" / "imagenet_label.json"),
                             "--output", str(tmp_path / "accuracy.json"), "--predictions",
                             str(tmp_path / "predictions.json")], check=True, capture_output=True)
    gate = subprocess.run([sys.executable, str(REPO / "workflow_scripts" / "summary.py"),
                           "--eval", str(finished_run / "eval" / "metrics.json"),
                           "--eval_predictions", str(finished_run / "eval" / "predictions.json"),
                           "--deployed", "MINDIR", *(str(infer / "mindir" / name) for name in
                                                     ("accuracy.json", "predictions.json", "latency.json")),
                           "--deployed", "ONNX", str(tmp_path / "accuracy.json"), str(tmp_path / "predictions.json"),
                           str(infer / "onnx" / "latency.json"),
                           "--output", str(tmp_path / "summary.json")], capture_output=True, text=True)
    assert gate.returncode == 1 and not (tmp_path / "summary.json").exists()
    assert "parity gate FAILED for deployed target ONNX: 2 of 359 images differ" in gate.stderr, gate.stderr
    listed = [line.split()[0] for line in gate.stderr.splitlines()[2:]]
    assert sorted(listed) == sorted([first["image"], second["image"]]), gate.stderr


# ------------------------------------------------------------------------------------------------
# Kill and resume
# ------------------------------------------------------------------------------------------------
TIMINGS = ("seconds", "images/s")  # the only fields of a metrics record that may differ between runs


def finished_states(state_root):
    """Epochs whose state is complete (the manifest is written after the checkpoint)."""
    return sorted(int(p.name[len("state-e"):-len(".json")]) for p in state_root.glob("*/state-e*.json"))


def test_sigkill_during_training_then_rerun_incomplete_resumes(tmp_path, finished_run):
    proc = snakemake(tmp_path, "--cores", "2", background=True, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "results" / "tiny"
    state_root, train_log = run / "train_state", run / "logs" / "train.log"
    epochs = yaml.safe_load((REPO / "tests/data/workflow/tiny_model.yaml").read_text())["epochs"]
    deadline = time.time() + 600
    try:  # kill once epoch 1's state is complete and epoch 2 has logged a step: certainly mid-run
        while time.time() < deadline and not (
                finished_states(state_root) and train_log.exists() and "[train] epoch 2/" in train_log.read_text()):
            assert proc.poll() is None, "workflow ended before training wrote its first epoch state"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # like a node failure: snakemake and trainer die at once
        proc.wait()
    at_kill = finished_states(state_root)
    assert at_kill and at_kill[-1] < epochs, f"the kill must land after epoch 1 and before the last: states {at_kill}"
    assert not (run / "train" / "vig_ti_patch16_224.ckpt").exists()
    snakemake(tmp_path, "--unlock")
    snakemake(tmp_path, "--cores", "2", "--rerun-incomplete")
    log = train_log.read_text()
    assert "starting fresh" not in log, log[-3000:]
    resumed_from = re.findall(r"\[resume\] \S+state-e(\d+)\.ckpt: (\d+) epoch\(s\) done", log)
    assert resumed_from == [(f"{at_kill[-1]:04d}", str(at_kill[-1]))], log[-3000:]  # the newest state at the kill
    resumed = [json.loads(x) for x in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    straight = [json.loads(x) for x in (finished_run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k not in TIMINGS} for r in resumed] == \
        [{k: v for k, v in r.items() if k not in TIMINGS} for r in straight]
    assert {"epoch", "train_loss", "lr", "val_top1", "val_top5", "val_loss", "val_images"} <= resumed[-1].keys()
    final_resumed = checkpoint_arrays(run / "train" / "vig_ti_patch16_224.ckpt")
    final_straight = checkpoint_arrays(finished_run / "train" / "vig_ti_patch16_224.ckpt")
    assert final_resumed.keys() == final_straight.keys()
    for name, value in final_straight.items():
        np.testing.assert_array_equal(final_resumed[name], value, err_msg=name)
    def accuracy_rows(summary):  # without the deployed targets' latency, a timing
        return [{k: v for k, v in row.items() if k != "ms_per_image"} for row in read_json(summary)["accuracy"]]

    assert accuracy_rows(run / "summary.json") == accuracy_rows(finished_run / "summary.json")
