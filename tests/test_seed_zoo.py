"""The model zoo's world (research/cv/ViG, "the seed") works here: its README's command lines and
launchers, its config keys, and one command-line convention across every CLI."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_train_loop import TINY_YAML, write_digits

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow_scripts"
SEED_YAML = REPO / "config" / "models" / "vig_s_patch16_224.yaml"
NO_ASCEND = "this machine has no Ascend device"


def run(args, cwd, timeout=300):
    """The launchers exec `python` as the seed's do: the one running these tests comes first on PATH (as
    `make test` puts the venv's), so `.venv/bin/python -m pytest` alone runs them too."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "GLOG_v": "3", "PATH": path})


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"seed_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rank_table(path: Path, devices: int) -> Path:
    table = {"version": "1.0", "server_count": "1", "status": "completed", "server_list": [
        {"server_id": "10.0.0.1", "host_nic_ip": "reserve",
         "device": [{"device_id": str(i), "device_ip": f"192.168.100.{101 + i}", "rank_id": str(i)}
                    for i in range(devices)]}]}
    path.write_text(json.dumps(table))
    return path


# ---- the seed README's commands as written (Ascend): the plan, then why it stops ------------------------

@pytest.fixture
def seed_layout(tmp_path):
    """The folders the seed YAML and README name: ../data/imagenet (its data_url), ./ckpt_0/<arch>.ckpt."""
    work = tmp_path / "work"
    for split in ("train", "val"):
        (tmp_path / "data" / "imagenet" / split).mkdir(parents=True)
    (work / "ckpt_0").mkdir(parents=True)
    (work / "ckpt_0" / "vig_s_patch16_224.ckpt").write_bytes(b"")  # never read: the run stops before
    return work


@pytest.mark.parametrize("command, plan", [
    (["python", "train.py", "--device_id", "0", "--device_target", "Ascend", "--vig_config", "CONFIG"],
     ["DEVICE_ID=0 python", "train.py --device_id 0 --device_target Ascend --vig_config"]),
    (["python", "eval.py", "--device_id", "0", "--device_target", "Ascend", "--vig_config", "CONFIG",
      "--pretrained", "./ckpt_0/vig_s_patch16_224.ckpt"],
     ["DEVICE_ID=0 python", "evaluate.py --device_id 0 --device_target Ascend"]),
    (["python", "export.py", "--pretrained", "./ckpt_0/vig_s_patch16_224.ckpt", "--vig_config", "CONFIG",
      "--device_target", "Ascend"], ["export.py --pretrained ./ckpt_0/vig_s_patch16_224.ckpt"]),
    (["bash", "run_standalone_train_ascend.sh", "3", "CONFIG"],
     ["DEVICE_ID=3 python", "train.py --device_id 3 --device_target Ascend --vig_config"]),
    (["bash", "run_eval_ascend.sh", "5", "CONFIG", "./ckpt_0/vig_s_patch16_224.ckpt"],
     ["DEVICE_ID=5 python", "--pretrained ./ckpt_0/vig_s_patch16_224.ckpt"]),
    (["bash", "run_distribute_train_ascend.sh", "TABLE", "CONFIG"],
     [f"DEVICE_ID={i} RANK_ID={i} RANK_SIZE=8 DEVICE_NUM=8 python" for i in range(8)]),
], ids=["train.py", "eval.py", "export.py", "standalone.sh", "eval.sh", "distribute.sh"])
def test_seed_readme_commands_print_the_ascend_plan_and_stop(seed_layout, command, plan):
    table = rank_table(seed_layout / "hccl_8p.json", 8)
    args = [str(SCRIPTS / w) if w.endswith((".py", ".sh")) else w for w in command]
    args = [sys.executable if w == "python" else str(SEED_YAML) if w == "CONFIG" else str(table) if w == "TABLE"
            else w for w in args]
    result = run(args, seed_layout, timeout=120)
    assert result.returncode == 2, result.stderr
    for part in plan:
        assert part in result.stdout, result.stdout
    (error,) = result.stderr.strip().splitlines()
    assert error.split(": error: ")[0].endswith(".py") and NO_ASCEND in error and "--device_target CPU" in error


def test_launchers_print_their_usage_when_arguments_are_missing(tmp_path):
    for script, usage in (("run_standalone_train_ascend.sh", "[DEVICE_ID] [CONFIG_PATH]"),
                          ("run_distribute_train_ascend.sh", "[RANK_TABLE_FILE] [CONFIG_PATH]"),
                          ("run_eval_ascend.sh", "[DEVICE_ID] [CONFIG_PATH] [CHECKPOINT_PATH]")):
        result = run(["bash", str(SCRIPTS / script), "0"], tmp_path, timeout=30)
        assert result.returncode == 2 and usage in result.stderr


# ---- the same commands on CPU: train (with the seed's run keys), eval, export ------------------------------

SEED_RUN_KEYS = """\
epochs: 5
start_epoch: 1
save_every: 2
keep_checkpoint_max: 1
"""


@pytest.fixture(scope="module")
def seed_cpu_run(tmp_path_factory):
    """The seed's train command, --device_target CPU, on a tiny ViG whose YAML enters a 5-epoch schedule
    at start_epoch 1 (4 epochs of 2 steps) and keeps a state every 2 epochs, at most 1."""
    root = tmp_path_factory.mktemp("seed_cpu")
    data = write_digits(root / "digits", train_per_class=2, val_per_class=1)
    config = root / "tiny_seed.yaml"
    body = "".join(line + "\n" for line in TINY_YAML.splitlines()
                   if not line.startswith(("epochs:", "keep_checkpoint_max:")))
    config.write_text(body + SEED_RUN_KEYS + f"data_url: {data}\n")
    result = run([sys.executable, str(SCRIPTS / "train.py"), "--device_id", "0", "--device_target", "CPU",
                  "--vig_config", str(config)], root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"root": root, "config": config, "log": result.stdout}


def test_seed_train_command_on_cpu_writes_where_the_seed_eval_command_reads(seed_cpu_run):
    assert (seed_cpu_run["root"] / "ckpt_0" / "vig_ti_patch16_224.ckpt").is_file()


def test_start_epoch_enters_the_schedule_there(seed_cpu_run):
    from vig.config import load_model_config
    from vig.train.schedule import build_lr_schedule

    states = seed_cpu_run["root"] / "train_state"
    (steps_log,) = states.glob("*/steps_rank0.jsonl")
    steps = [json.loads(line) for line in steps_log.read_text().splitlines()]
    assert [s["epoch"] for s in steps] == [2, 2, 3, 3, 4, 4, 5, 5]  # epochs start_epoch+1..epochs
    schedule = build_lr_schedule(load_model_config(seed_cpu_run["config"]), steps_per_epoch=2)
    np.testing.assert_allclose([s["lr"] for s in steps], schedule[2:], rtol=1e-6)  # not schedule[:8]


def test_save_every_and_keep_checkpoint_max(seed_cpu_run):
    saved = [line.rsplit("state-e", 1)[1] for line in seed_cpu_run["log"].splitlines() if line.startswith("[state] saved")]
    assert saved == ["0002.ckpt", "0004.ckpt", "0005.ckpt"]  # every 2nd epoch and the last
    (folder,) = (seed_cpu_run["root"] / "train_state").iterdir()
    kept = sorted(p.name for p in folder.glob("state-e*.ckpt"))
    assert "state-e0005.ckpt" in kept and len(kept) <= 2  # the newest 1, plus the best epoch's if saved


def test_seed_eval_and_export_commands_on_cpu(seed_cpu_run):
    root, config = seed_cpu_run["root"], str(seed_cpu_run["config"])
    ckpt = "./ckpt_0/vig_ti_patch16_224.ckpt"
    evaluated = run([sys.executable, str(SCRIPTS / "eval.py"), "--device_id", "0", "--device_target", "CPU",
                     "--vig_config", config, "--pretrained", ckpt], root)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert report["num_images"] == 10 and 0.0 <= report["top1"] <= 1.0
    exported = run([sys.executable, str(SCRIPTS / "export.py"), "--pretrained", ckpt, "--vig_config", config,
                    "--device_target", "CPU"], root)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (root / "vig_ti_patch16_224.mindir").stat().st_size > 10_000  # the seed's name, current folder


# ---- each seed key does what it says, or is refused with why ----------------------------------------------

def dry_run_train(tmp_path, capsys, *extra):
    for split in ("train", "val"):
        (tmp_path / "data" / split).mkdir(parents=True, exist_ok=True)
    code = load_script("train").main(["--vig_config", str(REPO / "config" / "models" / "vig_demo.yaml"),
                                      "--data_url", str(tmp_path / "data"), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_device_num_is_checked_against_the_rank_table(tmp_path, capsys):
    table = str(rank_table(tmp_path / "hccl_4p.json", 4))
    code, _, err = dry_run_train(tmp_path, capsys, "--rank_table", table, "--device_num", "8", "--dry_run_launch")
    assert code == 2 and "key 'device_num' = 8" in err and "lists 4 device(s)" in err
    code, out, _ = dry_run_train(tmp_path, capsys, "--rank_table", table, "--device_num", "4", "--dry_run_launch")
    assert code == 0 and "--worker_num=4" in out
    code, out, _ = dry_run_train(tmp_path, capsys, "--rank_table", table, "--dry_run_launch")  # unset: the table's
    assert code == 0 and "--worker_num=4" in out
    code, _, err = dry_run_train(tmp_path, capsys, "--set", "device_num=2")
    assert code == 2 and "without --rank_table the job has 1 device(s)" in err


def test_device_id_selects_the_device(tmp_path, capsys):
    from vig.train.distributed import device_id_of

    code, out, err = dry_run_train(tmp_path, capsys, "--device_target", "Ascend", "--device_id", "6")
    assert code == 2 and out.startswith("DEVICE_ID=6 python") and NO_ASCEND in err
    assert device_id_of(6, env={}) == 6
    assert device_id_of(6, env={"DEVICE_ID": "2"}) == 2  # a launcher's DEVICE_ID (from the rank table) wins


def test_file_format_air_needs_an_ascend(tmp_path, capsys):
    ckpt = tmp_path / "w.ckpt"
    ckpt.write_bytes(b"")
    export = load_script("export")
    for how in (["--file_format", "AIR"], ["--set", "file_format=AIR"]):
        code = export.main(["--vig_config", str(REPO / "config" / "models" / "vig_demo.yaml"), "--pretrained",
                            str(ckpt), "--output", str(tmp_path / "m.air"), *how])
        err = capsys.readouterr().err
        assert code == 2 and "export.py: error: file_format AIR" in err and "use file_format MINDIR" in err
    assert list(tmp_path.iterdir()) == [ckpt]


@pytest.mark.parametrize("override, says", [
    ("run_modelarts=true", "copy the dataset to a local or shared folder"),
    ("train_url=obs://bucket/out", "give those paths instead"),
    ("start_epoch=12", "expected fewer than epochs = 12"),
])
def test_keys_we_refuse_say_what_to_use_instead(override, says):
    from vig.config import ConfigError, load_model_config, parse_override

    with pytest.raises(ConfigError, match=says):
        load_model_config(REPO / "config" / "models" / "vig_demo.yaml", dict([parse_override(override)]))


# ---- one convention: underscore flags with dashed aliases, exit 2 and one error line for bad input ---------

def test_dashed_flags_are_aliases_of_the_underscore_ones():
    from vig.cli import underscore_flags

    known = {"--vig_config", "--device_id", "--dry_run_launch"}
    assert underscore_flags(["--vig-config=a.yaml", "--device-id", "3", "--dry-run-launch", "--not-known", "--",
                             "--device-id"], known) == \
        ["--vig_config=a.yaml", "--device_id", "3", "--dry_run_launch", "--not-known", "--", "--device-id"]
    args = load_script("export").build_parser().parse_args(
        ["--vig-config", "c.yaml", "--pretrained", "w.ckpt", "--device-target", "CPU", "--no-check", "--set", "ImageNet"])
    assert (args.vig_config, args.pretrained, args.no_check) == ("c.yaml", "w.ckpt", True)
    assert args.overrides == ["device_target=CPU", "ImageNet"]  # the seed's --set ImageNet is its dataset key


@pytest.mark.parametrize("script, argv", [
    ("train", ["--vig_config", "missing.yaml"]),
    ("evaluate", ["--vig_config", "missing.yaml", "--checkpoint", "w.ckpt"]),
    ("export", ["--vig_config", "missing.yaml", "--pretrained", "w.ckpt"]),
    ("verify_dataset", ["--data_url", "missing", "--output", "m.json", "--workers", "1"]),
    ("preprocess_310", ["--vig_config", "missing.yaml", "--data_url", "d", "--output_dir", "b", "--labels", "l.json"]),
    ("infer", ["--mindir", "missing.mindir", "--input_dir", "b", "--output_dir", "r", "--latency", "l.json"]),
    ("postprocess", ["--result_dir", "missing", "--labels", "l.json", "--output", "a.json"]),
    ("summary", ["--eval", "e.json", "--eval_predictions", "p.json", "--deployed", "MINDIR", "i.json", "ip.json",
                 "l.json", "--output", "s.json"]),
    ("report_plots", ["--kind", "curves", "--inputs", "missing.jsonl", "--output", "c.png"]),
    ("rank_table", ["--servers_json", "[1]", "--output", "t.json"]),
    ("prepare_demo_dataset", ["--output", "d", "--val_fraction", "2"]),
])
def test_every_cli_reports_bad_input_as_one_message_and_exit_2(script, argv, tmp_path, capsys):
    assert load_script(script).main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{script}.py: error: ") and err.count(": error: ") == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # nothing written


def test_a_cli_that_succeeds_exits_0(tmp_path, capsys):
    # build_demo_dataset returns a summary dict, which once became the exit status (1)
    assert load_script("prepare_demo_dataset").main(["--output", str(tmp_path / "d"), "--image_size", "8"]) == 0
    assert (tmp_path / "d" / "train").is_dir() and "error" not in capsys.readouterr().err
