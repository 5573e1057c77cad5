# Helpers shared by every stage: paths, the merged model config of each branch, per-step parameter subsets.
#
# A run has one or more branches: the run itself (branch "", paths results/<run>/...) or, with an
# `ablation` section, one per variant (branch "ablation/<variant>/", paths results/<run>/ablation/<variant>/...).
# Rules that train, evaluate or deploy a model take the {branch} wildcard and read that branch's own
# merged config through functions of it; the dataset and the rank table are shared by every branch.
import json
import shlex
from pathlib import Path

from vig.cluster import RANK_TABLE_CONFIG_KEYS, RankTableError, planned_topology
from snakemake.io import strip_wildcard_constraints

from vig.ablation import branch_of, variant_configs, variant_of
from vig.deploy import deploy_targets, file_format
from vig.config import (
    ConfigError,
    coerce_to_schema,
    load_model_config,
    model_schema,
    training_shape,
)

RUN = f"results/{config['run_name']}"
SCRIPTS = Path(workflow.basedir) / "workflow_scripts"
ENV = "../envs/vig.yaml"


def run_path(path):
    """A file the run's branches share (the dataset, the rank table)."""
    return f"{RUN}/{path}"


def branch_path(path):
    """A file of one branch: a pattern with the {branch} wildcard ("" for the run itself)."""
    return f"{RUN}/{{branch}}{path}"


def log_path(rule_name, branch=False):
    return (branch_path if branch else run_path)(f"logs/{rule_name}.log")


def bench_path(rule_name, branch=False):
    return (branch_path if branch else run_path)(f"benchmarks/{rule_name}.tsv")


def script(name):
    return shlex.quote(str(SCRIPTS / f"{name}.py"))


def repo_relative(path):
    """A config path as given, or relative to the workflow's folder (runs with --directory elsewhere)."""
    if Path(path).is_absolute() or Path(path).exists():
        return str(path)
    return str(Path(workflow.basedir) / path)


MODEL_CONFIG = repo_relative(config["model_config"])
TRAIN_OVERRIDES = coerce_to_schema(config.get("train_overrides") or {}, model_schema())
try:  # validate the model YAML + overrides now, before any job starts
    MODEL_CFG = load_model_config(MODEL_CONFIG, TRAIN_OVERRIDES)
except ConfigError as exc:
    raise WorkflowError(
        f"config key 'model_config' / 'train_overrides': {exc}"
    ) from None

ARCH = MODEL_CFG["arch"]

try:  # each ablation variant's merged config, validated now (errors name the variant and the key)
    VARIANTS = variant_configs(
        MODEL_CONFIG, TRAIN_OVERRIDES, MODEL_CFG, config.get("ablation") or {}
    )
except ConfigError as exc:
    raise WorkflowError(f"config key 'ablation': {exc}") from None
# branch -> (the overrides its steps pass as --set, its merged config)
BRANCHES = {"": (TRAIN_OVERRIDES, MODEL_CFG)}
BRANCHES.update({branch_of(name): found for name, found in VARIANTS.items()})
# the branches the run targets: the run itself, or the ablation's variants
TARGET_BRANCHES = [branch_of(name) for name in VARIANTS] or [""]


def branch_config(branch):
    return BRANCHES[branch][1]


def branch_label(wildcards):
    """The report's subcategory of a branch's pictures: its variant (None, as before, for the run itself)."""
    return variant_of(wildcards.branch)


def per_branch(function, *args, **kwargs):
    """A params function: `function(branch, ...)` for the job's {branch} wildcard."""
    return lambda wildcards: function(wildcards.branch, *args, **kwargs)


def weights_setting(key, value):
    """A weights file the config names, resolved like model_config and checked before any job starts."""
    if not value:
        return None
    path = repo_relative(value)
    if not Path(path).is_file():
        raise WorkflowError(
            f"config key {key} = {value!r}: weights file not found (expected a checkpoint of "
            "this project or an original PyTorch .pth)"
        )
    return path


# train.from_weights: deploy these weights as they are (no training); train.pretrained (or the model
# YAML's seed key `pretrained`): start training from them
# train.plan: time the configured training (train.py --plan) instead of running the workflow
PLAN_ONLY = config.get("train", {}).get("plan", False)
FROM_WEIGHTS = weights_setting(
    "train.from_weights", config.get("train", {}).get("from_weights")
)
PRETRAINED = weights_setting(
    "train.pretrained", config.get("train", {}).get("pretrained")
)
if FROM_WEIGHTS and PRETRAINED:
    raise WorkflowError(
        "config keys train.from_weights and train.pretrained are both set: from_weights deploys "
        "the weights without training, pretrained trains from them; keep one"
    )
if not FROM_WEIGHTS:
    PRETRAINED = PRETRAINED or weights_setting(
        f"'pretrained' of {MODEL_CONFIG}", MODEL_CFG.get("pretrained")
    )
if FROM_WEIGHTS and VARIANTS:
    raise WorkflowError(
        "config keys train.from_weights and ablation are both set: an ablation trains each variant; "
        "deploy given weights in a run without the ablation section"
    )
WEIGHTS = FROM_WEIGHTS or branch_path(f"train/{ARCH}.ckpt")

# deploy.targets (default by backend, vig.deploy): each is exported from WEIGHTS, run through the 310
# chain on the shared .bin files and held to the parity gate; {target} takes only these values
DEPLOY_TARGETS = deploy_targets(config, MODEL_CFG["device_target"])


wildcard_constraints:
    target="|".join(DEPLOY_TARGETS),


# What shapes the network and its input (evaluation, export, preprocessing).
NETWORK_KEYS = (
    "arch",
    "model_overrides",
    "num_classes",
    "image_size",
    "crop_pct",
    "mean",
    "std",
    "interpolation",
)


# What the 310 preprocessing depends on: branches equal in these share one .bin folder (an ImageNet val
# set is ~30 GB of .bin files, once per run rather than once per ablation variant).
PREPROCESS_KEYS = (
    "num_classes",
    "image_size",
    "crop_pct",
    "mean",
    "std",
    "interpolation",
)


def preprocess_branch(branch):
    """The branch whose preprocessed .bin files `branch` uses: the first of the run's branches (the run
    itself first) with the same PREPROCESS_KEYS."""
    inputs = lambda b: [branch_config(b)[k] for k in PREPROCESS_KEYS]
    return next(b for b in BRANCHES if inputs(b) == inputs(branch))


def preprocessed(pattern):
    """An input function: preprocess_310's output `pattern` for the job's preprocess_branch (the
    pattern stays readable as `.pattern` for steps_needed_by)."""
    pattern = strip_wildcard_constraints(str(pattern))

    def path(wildcards):
        return pattern.format(branch=preprocess_branch(wildcards.branch))

    path.pattern = pattern
    return path


def model_args(branch, only=None):
    """--vig_config plus one --set per override of the branch (train_overrides, and the variant's
    keys in an ablation; JSON values are valid YAML); `only` keeps the overrides a step depends on, so
    other keys do not rerun it."""
    args = ["--vig_config", MODEL_CONFIG]
    for key, value in BRANCHES[branch][0].items():
        if only is None or key in only:
            args += ["--set", f"{key}={json.dumps(value)}"]
    return " ".join(shlex.quote(a) for a in args)


def rank_table_section():
    """The cluster section's rank-table keys (the others are the launcher's): what the table is built from."""
    return {k: v for k, v in config["cluster"].items() if k in RANK_TABLE_CONFIG_KEYS}


try:  # the job's shape, as the rank table will have it (vig.cluster plans it; the rules only use it)
    SERVERS, DEVICES_PER_SERVER = planned_topology(config["cluster"])
except RankTableError as exc:
    raise WorkflowError(f"config key 'cluster': {exc}") from None


def train_resources():
    """What the training job asks a scheduler for: the devices of every server of the rank table.

    Ascend: `gres npu:N` per node; GPU: `gpu N` per node (one launcher process, msrun starts the
    workers); CPU: N tasks (msrun workers). Locally these are only counters.
    """
    train = config.get("train", {})
    res = {"mem_mb": train.get("mem_mb", 4000), "runtime": train.get("runtime", 60)}
    backend = MODEL_CFG["device_target"]
    if backend == "Ascend":
        res.update(gres=f"npu:{DEVICES_PER_SERVER}", tasks=1)
    elif backend == "GPU":
        res.update(gpu=DEVICES_PER_SERVER, tasks_per_gpu=0)
    else:
        res.update(
            tasks=DEVICES_PER_SERVER,
            cpus_per_task=max(1, train.get("threads", 2) // DEVICES_PER_SERVER),
        )
    if SERVERS > 1:
        res.update(nodes=SERVERS)
    return res


TRAIN_RESOURCES = train_resources()


def launch_prefix():
    """Multi-node: one launcher per node (msrun, or the Ascend per-device processes), started by
    srun inside the training job's allocation; each reads its node rank from SLURM_NODEID.
    """
    if SERVERS == 1:
        return ""
    return f"srun --nodes={SERVERS} --ntasks-per-node=1 --kill-on-bad-exit=1"


# training_params() and model_params() go into `params:` that no command reads: Snakemake reruns a
# step when its params change, so these say which config keys rerun which steps.
def training_params(branch):
    """What shapes training (vig.config.training_shape, also the state's hash): a change reruns
    training and everything after it. The starting weights count by content (their mtime is tracked
    as an input too)."""
    return training_shape(branch_config(branch), PRETRAINED)


def model_params(branch):
    """What shapes the network and its input (evaluation, export, preprocessing)."""
    return {k: branch_config(branch)[k] for k in NETWORK_KEYS}


def data_input():
    """The demo folder is a tracked output; a user's ImageNet folder is read in place."""
    return run_path("dataset/images") if config["data"]["demo"] else []


def data_dir_param(wildcards, input):
    """The dataset folder a step reads: the tracked demo input, or the configured data_url."""
    return input.data if config["data"]["demo"] else config["data"]["data_url"]


def summary_origin(branch):
    """Where the deployed weights came from, for the summary and the report."""
    if FROM_WEIGHTS:
        return "--weights_origin 'given (train.from_weights)'"
    started = f" --pretrained {shlex.quote(PRETRAINED)}" if PRETRAINED else ""
    metrics = branch_path("train/metrics.jsonl").format(branch=branch)
    return f"--weights_origin trained --train_metrics {metrics}{started}"


def draws_graph(branch):
    """plot_graph traces the original graph's layers (vig/graph_view.py); the seed port's graph has its own."""
    overrides = branch_config(branch).get("model_overrides") or {}
    return overrides.get("graph", "original") == "original"


def graph_images_args():
    """Which val images plot_graph draws: the listed ones, else the first of the first N classes."""
    chosen = config.get("plot_graph") or {}
    if chosen.get("images"):
        return "--images " + " ".join(shlex.quote(i) for i in chosen["images"])
    return f"--num_classes {chosen.get('num_classes', 4)}"


def per_target(pattern):
    """A file pattern once per deploy target if it has the {target} wildcard ({branch} stays a wildcard)."""
    pattern = strip_wildcard_constraints(str(pattern))
    if "{target}" not in pattern:
        return [pattern]
    return expand(pattern, target=DEPLOY_TARGETS, allow_missing=True)


def steps_needed_by(rule_name):
    """The rules whose outputs `rule_name` needs, directly or not, and itself, in workflow order."""
    # outputs carry the {branch} wildcard's constraint, inputs the bare pattern
    producers = {
        path: r for r in workflow.rules for f in r.output for path in per_target(f)
    }
    # an input is a file pattern, or an input function that names its pattern (preprocessed)
    pattern_of = lambda item: str(getattr(item, "pattern", item))
    needed, pending = {rule_name}, list(workflow.get_rule(rule_name).input)
    while pending:
        producer = producers.get(pattern_of(pending.pop()))
        if producer is not None and producer.name not in needed:
            needed.add(producer.name)
            pending.extend(
                path for f in producer.input for path in per_target(pattern_of(f))
            )
    return [r.name for r in workflow.rules if r.name in needed]


def benchmarks_needed_by(rule_name):
    """An input function: the benchmark files of `rule_name` and of every step it needs, one per deploy
    target for a per-target step (export_mindir, export_onnx, ...), in workflow order; the job's branch's,
    and for the 310 preprocessing its preprocess_branch's."""
    steps = [
        (step, path)
        for step in steps_needed_by(rule_name)
        for path in per_target(workflow.get_rule(step).benchmark)
    ]

    def files(wildcards):
        return [
            path.format(
                branch=(
                    preprocess_branch(wildcards.branch)
                    if step == "preprocess_310"
                    else wildcards.branch
                )
            )
            for step, path in steps
        ]

    return files


def branch_targets(branch):
    """The targets of one branch: its parity-gated summary and its report pictures (PLOTS: rules/summary.smk)."""
    pictures = [f"report/{picture}.png" for picture in PLOTS]
    if draws_graph(branch):
        pictures += ["report/patch_graph.png", "report/graph_health.png"]
    return [
        branch_path(path).format(branch=branch) for path in ["summary.json", *pictures]
    ]


ABLATION_TABLE = run_path("ablation/table.csv")


def branch_files(path):
    """One file of every ablation branch, in the config's order of variants."""
    return [branch_path(path).format(branch=branch_of(name)) for name in VARIANTS]


def variant_args():
    """ablation_table.py's --variant NAME FOLDER CHANGES per variant: what it reads and what it changed."""
    args = []
    for name in VARIANTS:
        changes = json.dumps(config["ablation"][name] or {}, sort_keys=True)
        args += ["--variant", name, f"{RUN}/{branch_of(name)}", changes]
    return " ".join(shlex.quote(a) for a in args)


def parity_tolerance_arg():
    """summary.py --near_tie_tolerance when deploy.parity_tolerance is set (default: the measured one)."""
    tolerance = config.get("deploy", {}).get("parity_tolerance")
    return "" if tolerance is None else f"--near_tie_tolerance {tolerance}"


def deployed_args(branch):
    """summary.py --deployed NAME ACCURACY PREDICTIONS LATENCY, once per deploy target (called by the
    summary rule, once the infer rules exist)."""
    args = []
    for target in DEPLOY_TARGETS:
        files = [
            strip_wildcard_constraints(str(pattern)).format(
                branch=branch, target=target
            )
            for pattern in (
                rules.postprocess.output.accuracy,
                rules.postprocess.output.predictions,
                rules.infer.output.latency,
            )
        ]
        args += ["--deployed", file_format(target), *files]
    return shlex.join(args)
