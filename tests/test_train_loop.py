"""End-to-end training through workflow_scripts/train.py on real images (scikit-learn digits):
a tiny ViG learns, and a run SIGKILLed mid-epoch then resumed reproduces the uninterrupted run exactly."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "workflow_scripts" / "train.py")

# the seed recipe (RandAugment, random erasing, Mixup/CutMix, smoothing, AdamW, clipping, dynamic loss
# scale) on a 16-channel, 2-block ViG at 32x32 with DropPath and EMA on, so every random part is exercised
TINY_YAML = """\
arch: vig_ti_patch16_224
model_overrides: {channels: [16], blocks: [2], k: 3, stem_stride: 8}
image_size: 32
num_classes: 10
drop_path_rate: 0.2
crop_pct: 1.0
auto_augment: rand-m9-mstd0.5-inc1
base_lr: 0.002
lr_linear_scaling: false
warmup_lr: 0.0001
min_lr: 0.00001
warmup_length: 1
epochs: 3
batch_size: 8
amp_level: O0
is_dynamic_loss_scale: true
ema: true
ema_decay: 0.9
num_parallel_workers: 1
device_target: CPU
log_every: 1
keep_checkpoint_max: 2
"""


def write_digits(root: Path, train_per_class: int, val_per_class: int, image_size: int = 32) -> Path:
    """train/<digit>/ and val/<digit>/ JPEGs from scikit-learn's 8x8 digits, upscaled."""
    from sklearn.datasets import load_digits

    from vig.demo_data import digit_to_rgb

    digits = load_digits()
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        for split, chosen in (("train", members[:train_per_class]),
                              ("val", members[train_per_class:train_per_class + val_per_class])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                digit_to_rgb(digits.images[i], image_size).save(folder / f"digit_{i:04d}.JPEG", quality=95)
    return root


def train_command(config: Path, data: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, TRAIN, "--vig_config", str(config), "--data_url", str(data),
            "--output_ckpt", str(out / "weights.ckpt"), "--metrics", str(out / "metrics.jsonl"),
            "--state_root", str(out / "state"), "--log_dir", str(out / "logs"), *extra]


def env():
    return {**os.environ, "GLOG_v": "3"}


def step_losses(state_root: Path) -> dict:
    """{(epoch, step): loss} from the per-step log; a repeated step (after a resume) keeps its last value."""
    (log,) = state_root.glob("*/steps_rank0.jsonl")
    losses = {}
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut by SIGKILL
            continue
        losses[(record["epoch"], record["step"])] = record["loss"]
    return losses


def weights(path: Path) -> dict:
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if hasattr(v, "asnumpy")}  # no extras


def kill_resume_and_compare(tmp_path, yaml_text: str, kill_line: str, steps: int) -> tuple[Path, str]:
    """Train uninterrupted; train again, SIGKILLed at the log line `kill_line` of epoch 2, then resumed: the
    per-step losses (`steps` in all), final weights and metrics must be bit-identical. Returns the killed
    run's output folder and the first run's log."""
    data = write_digits(tmp_path / "digits", train_per_class=4, val_per_class=2)  # 5 batches/epoch of 8
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml_text)

    full = tmp_path / "full"
    first = subprocess.run(train_command(config, data, full), check=True, env=env(), timeout=300,
                           stdout=subprocess.PIPE, text=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_command(config, data, killed), env=env(), stdout=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(kill_line):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    assert not (killed / "weights.ckpt").exists()

    resumed = subprocess.run(train_command(config, data, killed, "--resume", "auto"), env=env(), timeout=300,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 epoch(s) done" in resumed.stdout  # it really restarted from the epoch-1 state

    reference, repeated = step_losses(full / "state"), step_losses(killed / "state")
    assert len(reference) == steps and reference.keys() == repeated.keys()
    assert reference == repeated  # bit-identical per-step losses, the re-run part of epoch 2 included
    full_w, resumed_w = weights(full / "weights.ckpt"), weights(killed / "weights.ckpt")
    assert full_w.keys() == resumed_w.keys() and len(full_w) > 10
    for name in full_w:
        np.testing.assert_array_equal(full_w[name], resumed_w[name], err_msg=name)
    strip = lambda text: [{k: v for k, v in json.loads(l).items() if k not in ("seconds", "images/s")}
                          for l in text.splitlines()]
    assert strip((full / "metrics.jsonl").read_text()) == strip((killed / "metrics.jsonl").read_text())
    return killed, first.stdout


def test_sigkill_mid_epoch_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    killed, _ = kill_resume_and_compare(tmp_path, TINY_YAML, "[train] epoch 2/3 step 3/5", steps=15)
    # keep_checkpoint_max: 2 keeps the last 2 epochs' states, each with its manifest (the best weights apart)
    (folder,) = (killed / "state").iterdir()
    assert sorted(p.name for p in folder.glob("state-e*")) == [
        "state-e0002.ckpt", "state-e0002.json", "state-e0003.ckpt", "state-e0003.json"]
    # ema is on: the final weights are the EMA shadows of the last state, not the trained weights
    last, resumed_w = weights(folder / "state-e0003.ckpt"), weights(killed / "weights.ckpt")
    ema = {k[len("ema:"):]: v for k, v in last.items() if k.startswith("ema:")}
    assert ema.keys() == resumed_w.keys()
    for name in ema:
        np.testing.assert_array_equal(resumed_w[name], ema[name], err_msg=name)
    trained_differ = [n for n in ema if not np.array_equal(last[f"net:{n}"], ema[n])]
    assert len(trained_differ) > len(ema) // 2, "EMA (decay 0.9) and trained weights should differ after 15 steps"


def test_accumulation_two_resumes_bit_exactly_and_logs_the_global_batch(tmp_path):
    """accumulation_step: 2 on 5 batches per epoch: 2 optimizer steps of 2 micro-batches each, the fifth batch
    left out; SIGKILLed inside epoch 2 and resumed, it repeats the uninterrupted run exactly."""
    yaml_text = TINY_YAML.replace("epochs: 3", "epochs: 2") + "accumulation_step: 2\n"
    killed, log = kill_resume_and_compare(tmp_path, yaml_text, "[train] epoch 2/2 step 1/2", steps=4)
    assert "2 epochs x 2 steps, global batch 16 = batch 8 x 1 rank(s) x accumulation 2" in log
    assert "5 batches per rank per epoch: the last 1 make no full step of 2" in log
    assert set(step_losses(killed / "state")) == {(1, 1), (1, 2), (2, 1), (2, 2)}


LEARN_YAML = """\
arch: vig_ti_patch16_224
model_overrides: {channels: [32], blocks: [2], k: 4, stem_stride: 4}
image_size: 32
num_classes: 10
drop_path_rate: 0.0
crop_pct: 1.0
auto_augment: null
re_prob: 0.0
mix_up: 0.0
cutmix: 0.0
label_smoothing: 0.1
base_lr: 0.001
lr_linear_scaling: false
warmup_lr: 0.0001
min_lr: 0.00001
warmup_length: 1
epochs: 6
batch_size: 16
amp_level: O0
is_dynamic_loss_scale: false
num_parallel_workers: 1
device_target: CPU
log_every: 6
"""


def test_tiny_vig_learns_digits_and_evaluate_agrees(tmp_path):
    data = write_digits(tmp_path / "digits", train_per_class=30, val_per_class=6)  # 300 train, 60 val images
    config = tmp_path / "learn.yaml"
    config.write_text(LEARN_YAML)
    out = tmp_path / "run"
    result = subprocess.run(train_command(config, data, out), env=env(), timeout=600, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[train] epoch 6/6 step 18/18 loss" in result.stdout and "ETA" in result.stdout
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert {"train_loss", "lr", "val_top1", "val_top5", "val_loss", "images/s", "seconds"} <= metrics[-1].keys()
    assert metrics[-1]["val_images"] == 60
    assert metrics[-1]["val_top1"] >= 0.5, metrics  # chance is 0.1
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]

    report_path = out / "eval.json"
    evaluated = subprocess.run([sys.executable, str(REPO / "workflow_scripts" / "evaluate.py"), "--vig_config",
                                str(config), "--checkpoint", str(out / "weights.ckpt"), "--data_url", str(data),
                                "--split", "val", "--output", str(report_path), "--predictions",
                                str(out / "predictions.json")], env=env(), timeout=300,
                               capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["num_images"] == 60 and report["class_names"] == [str(d) for d in range(10)]
    assert report["top1"] == metrics[-1]["val_top1"]  # the same weights and transform as the last epoch's eval
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 60 and np.trace(matrix) == round(report["top1"] * 60)
    assert report["per_class_accuracy"]["3"] == matrix[3, 3] / matrix[3].sum()
    written = json.loads((out / "predictions.json").read_text())
    per_image = written["images"]  # the same predictions, per image
    # the parity gate's yardstick: how far one rounding step of the first batch moved its top-5 logits
    assert 0 <= written["rounding_sensitivity"] < 1 and "rounding_sensitivity" not in report
    assert [r["image"] for r in per_image] == [p.stem for p in sorted((data / "val").glob("*/*"))]
    assert [int(p.parent.name) for p in sorted((data / "val").glob("*/*"))] == [r["label"] for r in per_image]
    from_images = np.zeros((10, 10), int)
    for r in per_image:
        from_images[r["label"], r["top"][0]] += 1
        assert len(set(r["top"])) == 5 and r["logits"] == sorted(r["logits"], reverse=True)
    np.testing.assert_array_equal(from_images, matrix)
    assert sum(r["label"] in r["top"] for r in per_image) == round(report["top5"] * 60)


def test_final_weights_best_ema_last_and_the_best_survives_pruning(tmp_path):
    """final_weights best writes the epoch metrics.jsonl shows best (the EMA weights validation measured),
    also with keep_checkpoint_max: 1 pruning that epoch's state; ema / last are rewritten from the finished state."""
    data = write_digits(tmp_path / "digits", train_per_class=4, val_per_class=2)
    runs = {}
    for keep in (1, 3):
        config = tmp_path / f"keep{keep}.yaml"
        config.write_text(TINY_YAML.replace("keep_checkpoint_max: 2", f"keep_checkpoint_max: {keep}")
                          + "final_weights: best\n")
        out = tmp_path / f"keep{keep}"
        result = subprocess.run(train_command(config, data, out), env=env(), timeout=300, capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[keep] = (config, out)
    config, out = runs[3]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    top1 = [m["val_top1"] for m in metrics]
    best_epoch = metrics[int(np.argmax(top1))]["epoch"]  # the first epoch reaching the maximum
    assert metrics[-1]["final_weights"] == "best" and metrics[-1]["final_epoch"] == best_epoch
    assert all("final_weights" not in m for m in metrics[:-1])
    (folder,) = (out / "state").iterdir()
    best_state = weights(folder / f"state-e{best_epoch:04d}.ckpt")
    final = weights(out / "weights.ckpt")
    assert final.keys() == {k[len("ema:"):] for k in best_state if k.startswith("ema:")}
    for name, value in final.items():
        np.testing.assert_array_equal(value, best_state[f"ema:{name}"], err_msg=name)
    pruned = runs[1][1]  # keep_checkpoint_max: 1 deleted every state but the last, not the best weights
    (pruned_folder,) = (pruned / "state").iterdir()
    assert sorted(p.name for p in pruned_folder.glob("state-e*.ckpt")) == ["state-e0003.ckpt"]
    for name, value in weights(pruned / "weights.ckpt").items():
        np.testing.assert_array_equal(value, final[name], err_msg=name)

    last_state = weights(folder / "state-e0003.ckpt")
    for choice, group in (("ema", "ema"), ("last", "net")):  # the finished run's state rewrites them
        redone = subprocess.run(train_command(config, data, out, "--final_weights", choice), env=env(),
                                timeout=300, capture_output=True, text=True)
        assert redone.returncode == 0, redone.stderr[-3000:]
        assert "3 epoch(s) done" in redone.stdout
        assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["final_weights"] == choice
        for name, value in weights(out / "weights.ckpt").items():
            np.testing.assert_array_equal(value, last_state[f"{group}:{name}"], err_msg=f"{choice} {name}")


def test_plan_times_real_steps_and_projects_without_training(tmp_path):
    """train.py --plan with accumulation_step 2: the global batch, scaled LR and optimizer steps, measured s/step
    and img/s beside the pipeline's, and a projection made of the measured parts; it trains nothing and
    leaves no state."""
    data = write_digits(tmp_path / "digits", train_per_class=4, val_per_class=2)  # 40 images: 5 batches of 8
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML.replace("lr_linear_scaling: false", "lr_linear_scaling: true") + "accumulation_step: 2\n")
    out = tmp_path / "plan"
    result = subprocess.run(train_command(config, data, out, "--plan", "--plan_steps", "3", "--plan_output",
                                          str(out / "plan.json")), env=env(), timeout=300, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    assert (plan["global_batch"], plan["accumulation_step"], plan["ranks"]) == (16, 2, 1)
    assert (plan["steps_per_epoch"], plan["micro_batches_per_epoch"]) == (2, 5)  # the fifth batch is left out
    assert plan["lr_scale"] == 16 / 512 and np.isclose(plan["lr_peak"], 0.002 * 16 / 512)
    assert plan["steps_timed"] == 3 and plan["s_per_step"] > 0 and plan["pipeline_images_per_s"] > 0
    assert np.isclose(plan["images_per_s"], 16 / plan["s_per_step"])
    assert plan["val_batches_per_epoch"] == 3  # 20 val images in batches of 8
    assert plan["startup_s"] > 0 and plan["state_write_s"] > 0 and plan["states_written"] == 3
    epoch_s = 2 * plan["s_per_step"] + 3 * plan["val_batch_s"] + plan["pipeline_startup_s"] \
        + plan["val_pipeline_startup_s"]
    assert np.isclose(plan["epoch_s"], epoch_s)
    assert np.isclose(plan["projected_s"], plan["startup_s"] + plan["compile_s"] + 3 * epoch_s + 3 * plan["state_write_s"])
    assert plan["slurm_runtime_minutes"] >= plan["projected_s"] * 1.25 / 60
    for line in ("global batch 16 = batch 8 x 1 rank(s) x accumulation 2",
                 "steps per epoch 2 (optimizer steps; 5 batches per rank, the last 1 making no full step left out)",
                 "measured over 3 steps after 2 warm-up", "data pipeline alone", "projected:"):
        assert line in result.stdout, line
    assert not list((out / "state").glob(".plan-*"))  # the timed state write is removed
    assert not (out / "weights.ckpt").exists() and not (out / "metrics.jsonl").exists()
    assert not list((out / "state").glob("*/state-e*")) and not list((out / "state").glob("*/best*"))
