"""The workflow with given weights: `train.from_weights` deploys them without training (evaluation, export,
the 310 chain and the parity gate), `train.pretrained` trains from them and reruns when they change."""
import hashlib
import json
import time
from pathlib import Path

import pytest
import yaml
from helpers_torchfile import original_vig_shapes, random_state_dict, save_torch_file
from test_workflow import TINY, planned_jobs, snakemake

TINY_MODEL = yaml.safe_load((TINY.parent / "tiny_model.yaml").read_text())


def tiny_pth(path: Path, seed: int = 0) -> Path:
    """Random weights of the workflow tests' tiny model, in the original's PyTorch format."""
    overrides = TINY_MODEL["model_overrides"]
    shapes = original_vig_shapes(channels=overrides["channels"], blocks=overrides["blocks"],
                                 num_classes=TINY_MODEL["num_classes"], image_size=TINY_MODEL["image_size"],
                                 stem_stride=overrides["stem_stride"])
    return save_torch_file(path, random_state_dict(shapes, seed=seed))


def config_with(tmp_path: Path, name: str, **train) -> Path:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["run_name"] = name
    cfg["train"].update(train)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def given_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("given")
    weights = tiny_pth(workdir / "given.pth")
    snakemake(workdir, "--cores", "2", configfile=config_with(workdir, "given", from_weights=str(weights)))
    return workdir, weights


def test_given_weights_are_deployed_without_training_and_pass_the_parity_gate(given_run):
    workdir, weights = given_run
    run = workdir / "results" / "given"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parity"] == "passed" and summary["accuracy"][0]["num_images"] == 359
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert summary["weights"] == {"path": str(weights), "sha256": sha, "origin": "given (train.from_weights)"}
    assert json.loads((run / "eval" / "metrics.json").read_text())["weights_sha256"] == sha
    assert not (run / "train").exists() and not (run / "logs" / "train.log").exists()
    assert "original PyTorch" in (run / "logs" / "export_mindir.log").read_text()
    assert (run / "report" / "accuracy.png").stat().st_size > 1000
    report = workdir / "report.html"
    snakemake(workdir, "--report", str(report), configfile=workdir / "given.yaml")
    assert "deployed the given weights" in report.read_text(errors="replace")


def test_changing_the_pretrained_file_reruns_training(tmp_path):
    weights = tiny_pth(tmp_path / "start.pth")
    config = config_with(tmp_path, "tiny", pretrained=str(weights))
    run = tmp_path / "results" / "tiny"
    # what a finished training run leaves, newer than its inputs (the dry run only compares times)
    (run / "dataset" / "images").mkdir(parents=True)
    for path in ("dataset/manifest.json", "cluster/rank_table.json", "train/vig_ti_patch16_224.ckpt",
                 "train/metrics.jsonl"):
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_text("")
    target = "results/tiny/train/vig_ti_patch16_224.ckpt"
    proc = snakemake(tmp_path, "-n", "--cores", "1", target, configfile=config)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    time.sleep(0.05)
    tiny_pth(weights, seed=1)  # other starting weights, same path
    proc = snakemake(tmp_path, "-n", "-p", "--cores", "1", target, configfile=config)
    assert planned_jobs(proc.stdout) == {"train"}
    assert f"Updated input files: {weights}" in proc.stdout
    assert f"--pretrained {weights}" in proc.stdout


@pytest.mark.parametrize("train, message", [
    ({"from_weights": "missing.pth"}, "config key train.from_weights = 'missing.pth': weights file not found"),
    ({"pretrained": "w.pth", "from_weights": "w.pth"}, "train.from_weights and train.pretrained are both set"),
])
def test_weights_settings_are_checked_before_any_job(tmp_path, train, message):
    tiny_pth(tmp_path / "w.pth")
    proc = snakemake(tmp_path, "-n", "--cores", "1", configfile=config_with(tmp_path, "bad", **train), check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
