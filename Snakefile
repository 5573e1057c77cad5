# Vision GNN (ViG) on MindSpore: from raw images to a measured, deployed accuracy.
#   snakemake --cores 2                                   # the embedded demo (config/config.yaml)
#   snakemake --cores 8 --configfile config/imagenet_vig_s.yaml
#   snakemake --workflow-profile profiles/slurm ...       # on a Slurm cluster (docs/cluster.md)
# This file and rules/*.smk never import MindSpore: a dry run stays fast.
import copy
import sys

from snakemake.utils import min_version, validate

sys.path.insert(
    0, workflow.basedir
)  # the vig package, importable without installing (no MindSpore)
from vig.config import WORKFLOW_SCHEMA_PATH, coerce_to_schema, workflow_schema

min_version("9.0")


configfile: "config/config.yaml"


# A config given with --configfile is complete: it replaces the demo's instead of being deep-merged
# into it (a merge would leak demo keys such as cluster.servers into an Ascend run). --config
# key=value overrides still apply on top of either.
if workflow.overwrite_configfiles:
    config.clear()
    config.update(copy.deepcopy(workflow.config_settings.overwrite_config))


# `--config infer='{"batch_size": 8}'` delivers nested values as strings: read them as the schema asks.
# The schema ships in the package (vig/schema/), so an installed vig validates the same way.
config.update(coerce_to_schema(dict(config), workflow_schema()))
validate(config, str(WORKFLOW_SCHEMA_PATH))


report: "report/workflow.rst"


# A branch of the run (rules/common.smk): "" for the run itself, ablation/<variant>/ for a variant.
wildcard_constraints:
    branch=r"(ablation/[^/]+/)?",


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/cluster.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/export.smk"
include: "rules/infer.smk"
include: "rules/summary.smk"
include: "rules/ablation.smk"


# With train.plan the run only times training (train/plan.json); otherwise the whole DAG, once per
# branch (the run itself, or each ablation variant), and with an ablation the table comparing them.
rule all:
    default_target: True
    input:
        (
            [branch_path("train/plan.json").format(branch=b) for b in TARGET_BRANCHES]
            if PLAN_ONLY
            else [
                [branch_targets(branch) for branch in TARGET_BRANCHES],
                ABLATION_TABLE if VARIANTS else [],
            ]
        ),
    localrule: True
