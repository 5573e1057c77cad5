"""Model/training configuration: the seed model zoo's YAML keys, validated against a schema.

`load_model_config(path, overrides)` returns a plain dict with every key filled in (DEFAULTS), raising
`ConfigError` that names the file, the key and what is allowed before any data is read.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from pathlib import Path

import yaml

# The schemas ship inside the package (pyproject.toml's package data), so an installed vig validates
# configs without this repository. They are the one place a key's type, range and choices are written.
SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
SCHEMA_PATH = SCHEMA_DIR / "model.schema.yaml"
WORKFLOW_SCHEMA_PATH = SCHEMA_DIR / "config.schema.yaml"

# The seed's values (research/cv/ViG src/configs/vig_s_patch16_224.yaml + src/args.py) where it has
# one; this project's keys otherwise.
DEFAULTS = {
    "arch": "vig_s_patch16_224", "num_classes": 1000, "image_size": 224, "drop_path_rate": 0.1,
    "drop_rate": 0.0, "model_overrides": {},
    "data_url": "../data/imagenet", "set": "ImageNet", "num_parallel_workers": 8,
    "auto_augment": "rand-m9-mstd0.5-inc1", "interpolation": "bicubic",
    "re_prob": 0.25, "re_mode": "pixel", "re_count": 1,
    "mix_up": 0.8, "cutmix": 1.0, "mixup_prob": 1.0, "switch_prob": 0.5, "mixup_mode": "batch",
    "label_smoothing": 0.1, "crop_pct": 0.875,
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
    "optimizer": "adamw", "base_lr": 0.002, "warmup_lr": 7e-8, "min_lr": 6e-6, "lr_scheduler": "cosine_lr",
    "lr_linear_scaling": True, "warmup_length": 20, "lr_gamma": 0.97, "lr_adjust": 30,
    "beta": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05, "momentum": 0.9,
    "clip_global_norm_value": 5.0, "epochs": 300, "start_epoch": 0, "batch_size": 16, "accumulation_step": 1,
    "amp_level": "O2", "keep_bn_fp32": True, "is_dynamic_loss_scale": True, "loss_scale": 1024,
    "ema": False, "ema_decay": 0.99996, "final_weights": None,
    "seed": 0, "graph_mode": 0, "device_target": "CPU", "device_num": 1, "device_id": 0,
    "save_every": 1, "keep_checkpoint_max": 2, "log_every": 10, "pretrained": None,
    "file_format": "MINDIR", "train_url": "./", "run_modelarts": False, "in_channel": 3, "mlp_ratio": 4.0,
}

# Keys that do not change what is trained: a resumed run may differ in these.
NON_TRAINING_KEYS = frozenset({
    "data_url", "num_parallel_workers", "device_target", "device_id", "save_every", "keep_checkpoint_max",
    "log_every", "pretrained", "file_format", "train_url", "run_modelarts", "graph_mode", "keep_bn_fp32",
    "mlp_ratio", "set", "final_weights",
})

# Keys renamed after a release, no aliases: a config or flag with the old name stops, naming the new one.
RENAMED_KEYS = {"export_weights": "final_weights"}


class ConfigError(ValueError):
    """A configuration problem, with the file and key it concerns."""


@functools.lru_cache(maxsize=None)
def _read_schema(path: Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _load_schema() -> dict:
    return _read_schema(SCHEMA_PATH)


def validate_model_config(cfg: dict, source: str = "<config>") -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_load_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.path))
    if not errors:
        _check_cross_keys(cfg, source)
        return
    lines = []
    for err in errors:
        key = ".".join(str(p) for p in err.path) or "(top level)"
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            allowed = ", ".join(sorted(err.schema.get("properties", {})))
            renamed = "".join(f" ({old} is now {RENAMED_KEYS[old]})" for old in extra if old in RENAMED_KEYS)
            where = f" under '{key}'" if err.path else ""
            lines.append(f"unknown key(s) {', '.join(extra)}{where}{renamed}; allowed keys: {allowed}")
        else:
            rules = ("type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                     "minItems", "maxItems", "required")
            expected = {k: v for k, v in err.schema.items() if k in rules}
            shown = err.instance if not isinstance(err.instance, dict) else "{...}"
            lines.append(f"key '{key}' = {shown!r}: {err.message} (allowed: {expected})")
    raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines))


def _check_cross_keys(cfg: dict, source: str) -> None:
    from .variants import known_arch_names

    cfg = {**DEFAULTS, **cfg}  # also called on the raw YAML, before defaults are filled in

    if cfg["arch"] not in known_arch_names():
        raise ConfigError(f"{source}: key 'arch': unknown model {cfg['arch']!r}; "
                          f"valid names: {', '.join(known_arch_names())}")
    if (cfg["mix_up"] > 0 or cfg["cutmix"] > 0) and cfg["batch_size"] % 2:
        raise ConfigError(f"{source}: key 'batch_size' = {cfg['batch_size']}: mixup/cutmix (mix_up = {cfg['mix_up']}, "
                          f"cutmix = {cfg['cutmix']}) mixes each image with the batch's mirror image, so it needs an "
                          "even batch size; expected an even batch_size, or mix_up and cutmix 0")
    if cfg["min_lr"] > cfg["base_lr"]:
        raise ConfigError(f"{source}: key 'min_lr' = {cfg['min_lr']} is above base_lr = {cfg['base_lr']}; expected "
                          "min_lr <= base_lr (min_lr is the floor the schedule decays to)")
    if cfg["start_epoch"] >= cfg["epochs"]:
        raise ConfigError(f"{source}: key 'start_epoch' = {cfg['start_epoch']}: expected fewer than epochs = "
                          f"{cfg['epochs']} (the run trains epochs start_epoch+1..epochs)")
    if cfg["final_weights"] == "ema" and not cfg["ema"]:
        raise ConfigError(f"{source}: key 'final_weights' = 'ema' needs ema: true (no EMA is kept without it); "
                          f"expected ema: true, or final_weights last or best")
    if cfg["run_modelarts"]:
        raise ConfigError(f"{source}: key 'run_modelarts' = true: ModelArts/OBS (moxing) is not supported; copy "
                          f"the dataset to a local or shared folder and give it as data_url (or --data_url), "
                          f"run on a cluster with the Slurm profile (docs/cluster.md), and set run_modelarts: false")
    if cfg["train_url"] != DEFAULTS["train_url"]:
        raise ConfigError(f"{source}: key 'train_url' = {cfg['train_url']!r}: outputs are not copied to a "
                          f"train_url; train.py writes --output_ckpt, --metrics and --state_root (under Snakemake "
                          f"results/<run_name>/), so give those paths instead and drop train_url (or set it to "
                          f"{DEFAULTS['train_url']!r})")


_NON_STRING_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None),
                     "array": list, "object": dict}


def coerce_to_schema(data, schema: dict):
    """Read string values as YAML where the schema wants another type.

    Snakemake's `--config section='{"key": 8}'` delivers nested values as strings; a value that is
    a string but should be a number, boolean, null or list is parsed, the rest is left alone, so
    the schema validation that follows still reports anything that is really wrong.
    """
    if isinstance(data, dict):
        props = schema.get("properties", {})
        return {k: coerce_to_schema(v, props.get(k, {})) for k, v in data.items()}
    if isinstance(data, list) and isinstance(schema.get("items"), dict):  # `[24]` arrives as ['24']
        return [coerce_to_schema(v, schema["items"]) for v in data]
    wanted = schema.get("type")
    wanted = [wanted] if isinstance(wanted, str) else list(wanted or [])
    if isinstance(data, str) and wanted and "string" not in wanted:
        try:
            parsed = yaml.safe_load(data)
        except yaml.YAMLError:
            return data
        types = []
        for name in wanted:
            found = _NON_STRING_TYPES.get(name, ())
            types.extend(found if isinstance(found, tuple) else (found,))
        if isinstance(parsed, tuple(types)) and not (isinstance(parsed, bool) and "boolean" not in wanted):
            return parsed
    return data


def model_schema() -> dict:
    return copy.deepcopy(_load_schema())


def workflow_schema() -> dict:
    """The schema of the workflow config (config/config.yaml)."""
    return copy.deepcopy(_read_schema(WORKFLOW_SCHEMA_PATH))


def key_rules(key: str) -> dict:
    """One model-config key's schema entry: its type, bounds and allowed values."""
    return copy.deepcopy(_load_schema()["properties"][key])


def parse_override(item: str) -> tuple[str, object]:
    """'key=value' with a YAML value (`epochs=3`, `beta=[0.9,0.99]`, `auto_augment=null`)."""
    key, sep, raw = item.partition("=")
    if not sep and item in model_schema()["properties"]["set"]["enum"]:  # the seed's own --set: the dataset name
        return "set", item
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a config key, e.g. --set epochs=3 (or the "
                          f"seed's dataset name, --set ImageNet)")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value {raw!r} is not valid YAML "
                          f"({str(exc).splitlines()[0]}); e.g. --set beta=[0.9,0.99]") from None
    if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string; users mean the number
        try:
            value = float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "+inf") else value
        except ValueError:
            pass
    return key.strip(), value


def add_config_arguments(parser) -> None:
    """--vig_config YAML and repeatable --set KEY=VALUE: how every CLI names its model config."""
    parser.add_argument("--vig_config", "--config", dest="vig_config", required=True, metavar="YAML",
                        help="model/training YAML (config/models/*.yaml; the seed's keys are accepted as they are)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key with a YAML value, e.g. --set epochs=3 --set beta=[0.9,0.99]; "
                             "repeatable")


def config_from_args(args) -> dict:
    """The validated config named by add_config_arguments' options."""
    return load_model_config(args.vig_config, dict(parse_override(item) for item in args.overrides))


def load_model_config(path: str | os.PathLike, overrides: dict | None = None) -> dict:
    """Read a model YAML, apply overrides, fill defaults, validate. Errors name file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: model config file not found")
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys ('key: value' lines), found a YAML "
                          f"{type(raw).__name__}")
    merged = dict(raw)
    merged.update(overrides or {})
    source = str(path) + (f" (with overrides {sorted(overrides)})" if overrides else "")
    validate_model_config(merged, source)  # unknown keys are caught before defaults hide them
    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(merged)
    validate_model_config(cfg, source)
    return cfg


def training_shape(cfg: dict, pretrained: str | os.PathLike | None) -> dict:
    """Everything that shapes training: the keys but NON_TRAINING_KEYS, sorted, then the starting
    weights by content (another file never resumes the state). The training hash and the train rule's
    params are both this dict: keep its keys and their order, or running trainings restart and
    Snakemake reruns finished ones."""
    shape = {k: v for k, v in sorted(cfg.items()) if k not in NON_TRAINING_KEYS}
    if pretrained:
        from .weights import file_sha256

        shape["pretrained_sha256"] = file_sha256(pretrained)
    return shape


def training_hash(cfg: dict) -> str:
    """A short hash of training_shape (what a resumed state must agree with); cfg["pretrained"] is the
    starting weights, as the CLIs set it."""
    blob = json.dumps(training_shape(cfg, cfg.get("pretrained")), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_model(cfg: dict, training: bool = False, ops: str | None = None):
    """The network a config describes (drop-path only matters in training mode); `ops` is the vig.ops
    setting it is built with ("auto", "native"; None: the one in force)."""
    from .models import create_model

    overrides = dict(cfg.get("model_overrides") or {})
    overrides.setdefault("image_size", cfg["image_size"])
    if cfg.get("drop_rate"):
        overrides.setdefault("drop_rate", cfg["drop_rate"])
    model = create_model(cfg["arch"], num_classes=cfg["num_classes"], drop_path_rate=cfg["drop_path_rate"],
                         ops=ops, **overrides)
    model.set_train(training)
    return model
