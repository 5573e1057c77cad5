"""Deployment chain of the seed's Ascend-310 recipe, runnable on any MindSpore backend.

export (checkpoint -> MINDIR or ONNX with a dynamic batch) -> preprocess (one float32 NCHW .bin per
image and the seed's label file, shared by every target) -> infer (MINDIR through `nn.GraphCell`, ONNX
through onnxruntime, both writing `result_Files/<stem>_0.bin` logits) -> postprocess (top-1/top-5).
The workflow runs this chain once per deploy target (config key deploy.targets). Importing this package
does not import MindSpore.
"""


def deploy_targets(workflow_config: dict, device_target: str) -> list[str]:
    """The configured deploy.targets, else the backend's default: every target (mindir, onnx) on CPU;
    mindir alone on GPU and Ascend, where the MINDIR is the seed's deployment (the Ascend 310's file)."""
    from ..config import workflow_schema

    configured = (workflow_config.get("deploy") or {}).get("targets")
    if configured:
        return list(configured)
    choices = workflow_schema()["properties"]["deploy"]["properties"]["targets"]["items"]["enum"]
    return list(choices) if device_target == "CPU" else ["mindir"]


def file_format(target: str) -> str:
    """A deploy target's export format (export.py --file_format) and its name in the summary: MINDIR, ONNX."""
    return target.upper()
