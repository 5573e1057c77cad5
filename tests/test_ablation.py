"""Ablations (config key `ablation`): variants checked at parse time, one DAG branch per variant, and the
comparison table built from each branch's own files (vig/ablation.py, rules/ablation.smk)."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_workflow import REPO, TINY, planned_jobs, snakemake
from vig.ablation import variant_configs
from vig.config import ConfigError, load_model_config

TABLE_SCRIPT = REPO / "workflow_scripts" / "ablation_table.py"
TINY_MODEL = REPO / "tests" / "data" / "workflow" / "tiny_model.yaml"


def ablation_config(tmp_path, variants, name="ablation.yaml"):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["ablation"] = variants
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------------------------------------
# Parse time: a bad variant stops the run before any job, naming the variant and the key
# ------------------------------------------------------------------------------------------------
def test_a_bad_variant_key_stops_the_run_before_any_job_naming_the_variant_and_the_key(tmp_path):
    configfile = ablation_config(tmp_path, {"fine": {}, "broken": {"model_overrides": {"kk": 6}}})
    proc = snakemake(tmp_path, "-n", "--cores", "1", configfile=configfile, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'ablation': variant 'broken'" in out and "unknown key(s) kk under 'model_overrides'" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("variant, message", [
    ({"model_overrides": {"conv": "gat"}}, "key 'model_overrides.conv' = 'gat'"),
    ({"epochz": 2}, "unknown key(s) epochz"),
    ({"batch_size": 0}, "key 'batch_size' = 0"),
    ({"arch": "pvig_ti_224_gelu"}, "key(s) arch are shared by every variant"),
    ([3], "expected a mapping of model-config keys"),
])
def test_variant_configs_refuse_a_bad_variant_naming_it(variant, message):
    base = load_model_config(TINY_MODEL)
    with pytest.raises(ConfigError, match="variant 'broken'") as error:
        variant_configs(TINY_MODEL, {}, base, {"fine": {}, "broken": variant})
    assert message in str(error.value)


def test_a_variant_merges_its_model_overrides_into_the_base_config():
    base = load_model_config(TINY_MODEL, {"epochs": 2})
    found = variant_configs(TINY_MODEL, {"epochs": 2}, base, {"mr": None, "edge": {"model_overrides": {"conv": "edge"}},
                                                              "long": {"epochs": 5}})
    assert found["mr"] == ({"epochs": 2}, base)
    overrides, cfg = found["edge"]
    assert cfg["model_overrides"] == {**base["model_overrides"], "conv": "edge"} and cfg["epochs"] == 2
    assert overrides == {"epochs": 2, "model_overrides": cfg["model_overrides"]}
    assert found["long"][1]["epochs"] == 5 and found["long"][1]["model_overrides"] == base["model_overrides"]


# ------------------------------------------------------------------------------------------------
# The DAG: one branch per variant; adding a variant reruns only its branch and the table
# ------------------------------------------------------------------------------------------------
def branch_commands(stdout, variant):
    return [line for line in stdout.splitlines() if f"ablation/{variant}/" in line and "workflow_scripts/" in line]


def test_each_variant_is_a_branch_with_its_own_config_and_state(tmp_path):
    configfile = ablation_config(tmp_path, {"mr": {}, "edge_k2": {"model_overrides": {"conv": "edge", "k": 2}}})
    out = snakemake(tmp_path, "-n", "-p", "--cores", "2", configfile=configfile).stdout
    jobs = planned_jobs(out)
    assert {"train", "evaluate", "export", "infer", "summary", "profile_model", "ablation_table"} <= jobs
    train_edge = next(c for c in branch_commands(out, "edge_k2") if "train.py" in c)
    # the variant's model_overrides are merged into the base config's (channels, blocks, stem_stride stay)
    assert '"conv": "edge"' in train_edge and '"k": 2' in train_edge and '"channels": [24]' in train_edge
    assert "--state_root results/tiny/ablation/edge_k2/train_state" in train_edge
    train_mr = next(c for c in branch_commands(out, "mr") if "train.py" in c)
    assert "model_overrides" not in train_mr  # {} is the base config itself
    assert out.count("workflow_scripts/verify_dataset.py") == 1  # one verified dataset for every branch
    assert "results/tiny/summary.json" not in out  # the run itself is not a branch of its ablation
    # one set of 310 .bin files for the branches that preprocess alike (an ImageNet val set is ~30 GB)
    assert out.count("workflow_scripts/preprocess_310.py") == 1
    infers = [c for c in out.splitlines() if "workflow_scripts/infer.py" in c]
    assert len(infers) == 4 and all("--input_dir results/tiny/infer/preprocess_Result/images " in c for c in infers)


def test_a_variant_that_preprocesses_otherwise_gets_its_own_bin_files(tmp_path):
    configfile = ablation_config(tmp_path, {"mr": {}, "big": {"image_size": 24}})
    out = snakemake(tmp_path, "-n", "-p", "--cores", "2", configfile=configfile).stdout
    preprocess = [c for c in out.splitlines() if "workflow_scripts/preprocess_310.py" in c]
    assert len(preprocess) == 2 and any("--output_dir results/tiny/ablation/big/infer/preprocess_Result/images" in c
                                        and "image_size=24" in c for c in preprocess)
    big = [c for c in branch_commands(out, "big") if "infer.py" in c or "postprocess.py" in c]
    assert big and all("results/tiny/ablation/big/infer/preprocess_Result/" in c for c in big)


def make_outputs_exist(workdir, configfile):
    """Every output of the DAG as an empty file/folder, then `--touch` dates them in DAG order: a
    finished run as far as Snakemake's scheduling can tell, without running a job."""
    out = snakemake(workdir, "-n", "--cores", "1", configfile=configfile).stdout
    for line in out.splitlines():
        if line.strip().startswith(("output:", "benchmark:")):
            for path in line.split(":", 1)[1].split(","):
                path = workdir / path.strip()
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.name in ("images", "result_Files"):
                    path.mkdir(exist_ok=True)
                else:
                    path.touch()
    snakemake(workdir, "--touch", "--cores", "1", configfile=configfile)


def test_adding_a_variant_reruns_only_that_branch_and_the_table(tmp_path):
    two = {"mr": {}, "k2": {"model_overrides": {"k": 2}}}
    make_outputs_exist(tmp_path, ablation_config(tmp_path, two))
    proc = snakemake(tmp_path, "-n", "--cores", "2", configfile=ablation_config(tmp_path, two))
    assert "Nothing to be done" in proc.stdout + proc.stderr

    three = {**two, "gin": {"model_overrides": {"conv": "gin"}}}
    out = snakemake(tmp_path, "-n", "-p", "--cores", "2", configfile=ablation_config(tmp_path, three)).stdout
    jobs = planned_jobs(out)
    assert {"train", "evaluate", "export", "infer", "postprocess", "summary", "profile_model", "ablation_table"} <= jobs
    assert not jobs & {"prepare_demo_dataset", "verify_dataset", "rank_table", "preprocess_310"}  # .bin files shared
    scripts = [line for line in out.splitlines() if "workflow_scripts/" in line]
    assert scripts and all("ablation/gin/" in line or "ablation_table.py" in line for line in scripts), scripts
    table = next(line for line in scripts if "ablation_table.py" in line)  # reads every branch, runs only itself
    assert all(f"--variant {name} results/tiny/ablation/{name}/" in table for name in three)


# ------------------------------------------------------------------------------------------------
# The table: every number from the branch's own files
# ------------------------------------------------------------------------------------------------
def write_branch(folder, top1, top5, params, macs, images_per_s, train_s, epochs, parity="passed"):
    (folder / "model").mkdir(parents=True)
    (folder / "train").mkdir()
    (folder / "benchmarks").mkdir()
    accuracy = [{"model": "eval (in framework)", "top1": top1, "top5": top5},
                {"model": "deployed (MINDIR)", "top1": top1, "top5": top5}]
    (folder / "summary.json").write_text(json.dumps({"parity": parity, "accuracy": accuracy,
                                                     "images_compared": {"MINDIR": 359}}))
    (folder / "model" / "profile.json").write_text(json.dumps({"params": params, "macs": macs,
                                                               "images_per_s": images_per_s}))
    (folder / "train" / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1}) + "\n"
                                                            for e in range(epochs)))
    (folder / "benchmarks" / "train.tsv").write_text("s\th:m:s\tmax_rss\n" f"{train_s}\t0:01:00\t900\n")


def test_the_table_reads_each_number_from_its_branch(tmp_path):
    write_branch(tmp_path / "mr", 0.91, 0.99, 101_000, 2_500_000, 812.44, 61.27, 4)
    write_branch(tmp_path / "edge", 0.93, 1.0, 133_000, 4_100_000, 455.0, 98.5, 3)
    csv_path, html_path = tmp_path / "table.csv", tmp_path / "table.html"
    subprocess.run([sys.executable, str(TABLE_SCRIPT), "--variant", "mr", str(tmp_path / "mr"), "{}",
                    "--variant", "edge", str(tmp_path / "edge"), '{"model_overrides": {"conv": "edge"}}',
                    "--csv", str(csv_path), "--html", str(html_path)], check=True, capture_output=True)
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["variant"] for r in rows] == ["mr", "edge"]
    assert [(r["top1"], r["top5"], r["params"], r["macs"], r["images_per_s"], r["train_s"], r["epochs"])
            for r in rows] == [("0.91", "0.99", "101000", "2500000", "812.4", "61.3", "4"),
                               ("0.93", "1.0", "133000", "4100000", "455.0", "98.5", "3")]
    assert [(r["deployed"], r["deployed_top1"], r["parity"]) for r in rows] == [("MINDIR", "0.91", "passed"),
                                                                               ("MINDIR", "0.93", "passed")]
    assert json.loads(rows[1]["changes"]) == {"model_overrides": {"conv": "edge"}}
    page = html_path.read_text()
    assert "<td class=best>0.9300</td>" in page and "0.133 M" in page and "4.10 M" in page


def test_a_branch_with_a_missing_file_stops_the_table_naming_it(tmp_path):
    write_branch(tmp_path / "mr", 0.91, 0.99, 1, 1, 1.0, 1.0, 1)
    (tmp_path / "mr" / "model" / "profile.json").unlink()
    proc = subprocess.run([sys.executable, str(TABLE_SCRIPT), "--variant", "mr", str(tmp_path / "mr"), "{}",
                           "--csv", str(tmp_path / "t.csv"), "--html", str(tmp_path / "t.html")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "profile.json" in proc.stderr
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "t.html").exists()


def test_model_overrides_schema_lists_exactly_the_vig_config_fields():
    from vig.config import model_schema
    from vig.models.vig import ViGConfig

    assert set(model_schema()["properties"]["model_overrides"]["properties"]) == set(ViGConfig.__dataclass_fields__)


def test_nested_command_line_values_are_read_as_the_model_schema_asks():
    """`--config ablation='{k8: {model_overrides: {channels: [24], k: 8}}}'` delivers '24' and '8' as strings."""
    from vig.config import coerce_to_schema, model_schema

    given = {"model_overrides": {"channels": ["24", "48"], "k": "8", "conv": "edge", "use_dilation": "false"}}
    assert coerce_to_schema(given, model_schema()) == {
        "model_overrides": {"channels": [24, 48], "k": 8, "conv": "edge", "use_dilation": False}}


def test_profile_model_measures_the_branch_model(tmp_path):
    """profile_model.py counts the model its --set overrides build (the edge conv: same params as mr, its
    2C -> C conv applied to every node-neighbour pair, so more MACs), loads its weights and times it;
    a bad option stops it before any model is built."""
    import mindspore as ms

    from vig.config import build_model
    from vig.models.complexity import count_macs, count_parameters

    script = REPO / "workflow_scripts" / "profile_model.py"
    configs = {conv: load_model_config(TINY_MODEL, {"model_overrides": {"channels": [24], "blocks": [2], "k": 3,
                                                                        "stem_stride": 4, "conv": conv}})
               for conv in ("mr", "edge")}
    nets = {conv: build_model(cfg) for conv, cfg in configs.items()}
    ms.save_checkpoint(nets["edge"], str(tmp_path / "edge.ckpt"))
    subprocess.run([sys.executable, str(script), "--vig_config", str(TINY_MODEL), "--set",
                    f"model_overrides={json.dumps(configs['edge']['model_overrides'])}", "--pretrained",
                    str(tmp_path / "edge.ckpt"), "--batch_size", "8", "--repeats", "2",
                    "--output", str(tmp_path / "edge.json")], check=True, capture_output=True)
    found = json.loads((tmp_path / "edge.json").read_text())
    assert found["model_overrides"]["conv"] == "edge" and found["images_per_s"] > 0
    assert found["params"] == count_parameters(nets["edge"]) == count_parameters(nets["mr"])
    assert found["macs"] == count_macs(nets["edge"]) > count_macs(nets["mr"])
    bad = subprocess.run([sys.executable, str(script), "--vig_config", str(TINY_MODEL), "--pretrained",
                          str(tmp_path / "edge.ckpt"), "--batch_size", "0", "--output", str(tmp_path / "x.json")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--batch_size 0" in bad.stderr and not (tmp_path / "x.json").exists()
