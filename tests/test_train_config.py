"""Config handling of the training CLIs: the seed's ViG-S YAML as it is, and named errors before any work."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vig.ablation import variant_configs
from vig.config import ConfigError, load_model_config, parse_override, training_hash, training_shape

REPO = Path(__file__).resolve().parents[1]

# research/cv/ViG/src/configs/vig_s_patch16_224.yaml of the seed, every key and value (vig_reference.md B.1)
SEED_VIG_S_YAML = """\
arch: vig_s_patch16_224
data_url: ../data/imagenet
set: ImageNet
num_classes: 1000
mix_up: 0.8
cutmix: 1.0
auto_augment: rand-m9-mstd0.5-inc1
interpolation: bicubic
re_prob: 0.25
re_mode: pixel
re_count: 1
mixup_prob: 1.
switch_prob: 0.5
mixup_mode: batch
image_size: 224
optimizer: adamw
base_lr: 0.002
drop_path_rate: 0.1
warmup_lr: 0.00000007
min_lr: 0.000006
lr_scheduler: cosine_lr
warmup_length: 20
amp_level: O2
keep_bn_fp32: True
beta: [0.9, 0.999]
clip_global_norm_value: 5.
is_dynamic_loss_scale: True
epochs: 300
label_smoothing: 0.1
weight_decay: 0.05
momentum: 0.9
batch_size: 16
num_parallel_workers: 8
device_target: Ascend
"""


def test_seed_vig_s_yaml_loads_unchanged(tmp_path):
    path = tmp_path / "vig_s_patch16_224.yaml"
    path.write_text(SEED_VIG_S_YAML)
    cfg = load_model_config(path)
    assert cfg["arch"] == "vig_s_patch16_224" and cfg["base_lr"] == 0.002 and cfg["batch_size"] == 16
    assert cfg["beta"] == [0.9, 0.999] and cfg["warmup_lr"] == 7e-8 and cfg["amp_level"] == "O2"
    assert cfg["lr_linear_scaling"] is True  # the seed always scales by global batch / 512
    shipped = load_model_config(REPO / "config" / "models" / "vig_s_patch16_224.yaml")
    assert {k: shipped[k] for k in cfg} == cfg  # the shipped file is the seed's


def _run_train(args, timeout=120):
    return subprocess.run([sys.executable, str(REPO / "workflow_scripts" / "train.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "GLOG_v": "3"})


@pytest.mark.parametrize("line, key, expected", [
    ("colour_jitter: 0.4", "colour_jitter", "unknown key"),
    ("epochs: three", "epochs", "integer"),
    ("re_prob: 1.5", "re_prob", "maximum"),
])
def test_bad_key_fails_naming_key_and_file_before_any_data(tmp_path, line, key, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(SEED_VIG_S_YAML + line + "\n")
    with pytest.raises(ConfigError) as err:
        load_model_config(path)
    assert key in str(err.value) and str(path) in str(err.value) and expected in str(err.value)
    # through the CLI: the data folder exists but holds nothing; the config error comes first
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir(parents=True)
    result = _run_train(["--vig_config", str(path), "--data_url", str(tmp_path / "data")])
    assert result.returncode == 2
    assert key in result.stderr and str(path) in result.stderr and "[data]" not in result.stdout


def test_bad_override_and_missing_data_dir_fail_clearly(tmp_path):
    demo = str(REPO / "config" / "models" / "vig_demo.yaml")
    result = _run_train(["--vig_config", demo, "--set", "batch_size=-4", "--data_url", str(tmp_path)])
    assert result.returncode == 2 and "batch_size" in result.stderr and "overrides" in result.stderr
    result = _run_train(["--vig_config", demo, "--data_url", str(tmp_path / "nowhere")])
    assert result.returncode == 2 and "nowhere" in result.stderr and "train" in result.stderr


def test_help_documents_every_option():
    for script, options in (("train.py", ["--vig_config", "--set", "--data_url", "--output_ckpt", "--metrics",
                                          "--state_root", "--resume", "--pretrained", "--rank_table", "--launcher",
                                          "--master_addr", "--master_port", "--node_rank", "--log_dir",
                                          "--dry_run_launch"]),
                            ("evaluate.py", ["--vig_config", "--set", "--pretrained", "--checkpoint", "--data_url",
                                             "--split", "--output", "--batch_size", "--rank_table", "--launcher"])):
        result = subprocess.run([sys.executable, str(REPO / "workflow_scripts" / script), "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0
        for option in options:
            assert option in result.stdout, (script, option)


@pytest.mark.parametrize("extra, expected", [
    ("arch: vig_xl_patch16_224\n", r"key 'arch': unknown model 'vig_xl_patch16_224'; valid names: .*vig_s_patch16_224"),
    ("batch_size: 7\n", r"key 'batch_size' = 7: mixup/cutmix \(mix_up = 0.8, cutmix = 1.0\).*expected an even batch"),
    ("min_lr: 0.01\n", r"key 'min_lr' = 0.01 is above base_lr = 0.002; expected min_lr <= base_lr"),
    ("final_weights: ema\n", r"key 'final_weights' = 'ema' needs ema: true"),
    ("final_weights: first\n", r"key 'final_weights' = 'first'.*\[None, 'last', 'best', 'ema'\]"),
    ("export_weights: best\n", r"unknown key\(s\) export_weights \(export_weights is now final_weights\)"),
])
def test_cross_key_errors_name_file_key_and_value(tmp_path, extra, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(SEED_VIG_S_YAML + extra)
    with pytest.raises(ConfigError, match=expected) as err:
        load_model_config(path)
    assert str(err.value).startswith(str(path))


def test_odd_batch_is_fine_without_mixup(tmp_path):
    path = tmp_path / "odd.yaml"
    path.write_text(SEED_VIG_S_YAML + "batch_size: 7\nmix_up: 0.0\ncutmix: 0.0\n")
    assert load_model_config(path)["batch_size"] == 7


@pytest.mark.parametrize("item, expected", [
    ("epochs", r"--set 'epochs': expected KEY=VALUE"),
    ("=3", r"--set '=3': expected KEY=VALUE"),
    ("beta=[0.9,", r"--set 'beta=\[0.9,': the value '\[0.9,' is not valid YAML"),
])
def test_malformed_set_is_named(item, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_override(item)
    assert parse_override(" epochs=3") == ("epochs", 3) and parse_override("min_lr=5e-6") == ("min_lr", 5e-6)


def test_malformed_set_through_the_cli_exits_2_naming_it(tmp_path):
    result = _run_train(["--vig_config", str(REPO / "config" / "models" / "vig_demo.yaml"), "--set", "beta=[0.9,",
                         "--data_url", str(tmp_path)])
    assert result.returncode == 2 and "--set 'beta=[0.9,'" in result.stderr and "Traceback" not in result.stderr


def test_a_yaml_that_is_not_a_mapping_is_named(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- arch: vig_s_patch16_224\n- epochs: 3\n")
    with pytest.raises(ConfigError, match=rf"{path}: expected a mapping of config keys .* found a YAML list"):
        load_model_config(path)


# The keys a resumed state may differ in, as every state folder on users' disks was named with (a copy, not
# vig.config's set: editing that set renames every state folder and must fail here first).
STATE_IGNORES = {"data_url", "num_parallel_workers", "device_target", "device_id", "save_every",
                 "keep_checkpoint_max", "log_every", "pretrained", "file_format", "train_url", "run_modelarts",
                 "graph_mode", "keep_bn_fp32", "mlp_ratio", "set", "final_weights"}


def test_training_hash_and_train_params_keep_their_on_disk_form(tmp_path):
    """The state folder's name (training_hash) and the train rule's params (training_shape, recorded by
    Snakemake as repr) stated independently of vig.config: a change restarts users' trainings or reruns
    finished ones."""
    weights = tmp_path / "start.ckpt"
    weights.write_bytes(b"any starting weights")
    demo = REPO / "config" / "models" / "vig_demo.yaml"
    base = load_model_config(demo, {"epochs": 4})
    edge_k8 = variant_configs(demo, {"epochs": 4}, base, {"edge_k8": {"model_overrides": {"conv": "edge", "k": 8}}})
    for cfg in (load_model_config(demo), load_model_config(demo, {"pretrained": str(weights)}), edge_k8["edge_k8"][1]):
        expected = {key: cfg[key] for key in sorted(cfg) if key not in STATE_IGNORES}
        if cfg["pretrained"]:
            expected["pretrained_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        assert repr(training_shape(cfg, cfg["pretrained"])) == repr(expected)  # repr: the keys' order counts
        blob = json.dumps(expected, sort_keys=True, default=str).encode()
        assert training_hash(cfg) == hashlib.sha256(blob).hexdigest()[:16]
