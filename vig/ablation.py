"""Ablations: named variants of one model config, each trained, evaluated and deployed as its own branch
of the workflow (results/<run>/ablation/<variant>/), and the table that compares them, read from each
branch's own files. No MindSpore import: the workflow checks the variants while it parses.
"""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from .config import ConfigError, coerce_to_schema, load_model_config, model_schema
from .io import read_json
from .summary import read_train_metrics

BRANCH_PREFIX = "ablation/"
# One value per run: every branch shares the data, the rank table and the launcher, and the file names
# downstream steps read (train/<arch>.ckpt).
SHARED_KEYS = ("arch", "pretrained", "device_target", "device_num", "device_id")


def branch_of(variant: str) -> str:
    """The {branch} wildcard value of a variant (the run itself is "")."""
    return f"{BRANCH_PREFIX}{variant}/"


def variant_of(branch: str) -> str | None:
    return branch[len(BRANCH_PREFIX):-1] if branch else None


def variant_overrides(base_cfg: dict, train_overrides: dict, changes: dict) -> dict:
    """What a variant's steps pass as --set: train_overrides, then the variant's keys. Its model_overrides
    are merged into the base config's (`{conv: edge}` changes the graph conv of the configured model,
    not a default-sized one)."""
    merged = {**train_overrides, **changes}
    if "model_overrides" in changes:
        merged["model_overrides"] = {**(base_cfg.get("model_overrides") or {}),
                                     **(changes["model_overrides"] or {})}
    return merged


def variant_configs(model_config, train_overrides: dict, base_cfg: dict, variants: dict) -> dict:
    """{variant: (its --set overrides, its merged and validated config)}; a bad variant raises
    ConfigError naming the variant and the key."""
    found = {}
    for name, changes in variants.items():
        changes = changes or {}
        if not isinstance(changes, dict):
            raise ConfigError(f"variant {name!r} = {changes!r}: expected a mapping of model-config keys, "
                              f"e.g. {{model_overrides: {{conv: edge}}}} ({{}} for the base config)")
        shared = sorted(set(changes) & set(SHARED_KEYS))
        if shared:
            raise ConfigError(f"variant {name!r}: key(s) {', '.join(shared)} are shared by every variant of a "
                              f"run; set them in model_config or train_overrides (or use another run_name)")
        changes = coerce_to_schema(changes, model_schema())
        overrides = variant_overrides(base_cfg, train_overrides, changes)
        try:
            found[name] = (overrides, load_model_config(model_config, overrides))
        except ConfigError as exc:
            raise ConfigError(f"variant {name!r}: {exc}") from None
    return found


# ------------------------------------------------------------------------------------------------
# The comparison table
# ------------------------------------------------------------------------------------------------
COLUMNS = ("variant", "changes", "top1", "top5", "params", "macs", "images_per_s", "train_s", "epochs",
           "deployed", "deployed_top1", "parity")
HEADINGS = {"variant": "variant", "changes": "changes", "top1": "top-1", "top5": "top-5", "params": "params",
            "macs": "MACs", "images_per_s": "img/s (in framework)", "train_s": "training (s)",
            "epochs": "epochs", "deployed": "deployed as", "deployed_top1": "deployed top-1", "parity": "parity"}


def read_train_seconds(benchmark_tsv) -> float:
    """Wall seconds of the training job, from Snakemake's benchmark file (header line, then `s` first)."""
    lines = Path(benchmark_tsv).read_text().splitlines()
    if len(lines) < 2 or not lines[0].startswith("s\t"):
        raise ValueError(f"{benchmark_tsv}: expected a Snakemake benchmark (a header starting with 's', then "
                         f"one line of numbers)")
    return float(lines[-1].split("\t")[0])


def branch_row(variant: str, changes: dict, folder) -> dict:
    """One variant's row, from its branch folder: summary.json (accuracy of the evaluation and of the
    deployed models (the lowest if several), parity), model/profile.json (params, MACs, img/s), benchmarks/train.tsv (training
    wall time) and train/metrics.jsonl (epochs)."""
    folder = Path(folder)
    summary = read_json(folder / "summary.json", "summary", ("parity", "accuracy"))
    profile = read_json(folder / "model" / "profile.json", "model profile", ("params", "macs", "images_per_s"))
    evaluated, deployed = summary["accuracy"][0], summary["accuracy"][1:]
    epochs = len(read_train_metrics(folder / "train" / "metrics.jsonl"))
    return {"variant": variant, "changes": json.dumps(changes, sort_keys=True, separators=(", ", ": ")),
            "top1": evaluated["top1"], "top5": evaluated["top5"], "params": profile["params"],
            "macs": profile["macs"], "images_per_s": round(profile["images_per_s"], 1),
            "train_s": round(read_train_seconds(folder / "benchmarks" / "train.tsv"), 1), "epochs": epochs,
            "deployed": " ".join(summary.get("images_compared", {})),
            "deployed_top1": min(row["top1"] for row in deployed), "parity": summary["parity"]}


def table_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _cell(key: str, value) -> str:
    if key in ("top1", "top5", "deployed_top1"):
        return f"{value:.4f}"
    if key == "params":
        return f"{value / 1e6:.3f} M"
    if key == "macs":
        return f"{value / 1e6:.2f} M"
    return html.escape(str(value))


def table_html(rows: list[dict], title: str) -> str:
    """A self-contained page (the report shows it in a frame): the best top-1 in bold."""
    best = max((r["top1"] for r in rows), default=None)
    head = "".join(f"<th>{HEADINGS[k]}</th>" for k in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=best' if k == 'top1' and r['top1'] == best else ''}>{_cell(k, r[k])}</td>"
                         for k in COLUMNS) + "</tr>\n" for r in rows)
    style = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
             "th,td{border:1px solid #bbb;padding:4px 8px;text-align:right;white-space:nowrap}"
             "td:nth-child(2),th{text-align:left}td:nth-child(2){white-space:normal}"
             "th{background:#eee}.best{font-weight:bold}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h3>{html.escape(title)}</h3>\n"
            f"<table><tr>{head}</tr>\n{body}</table></body></html>\n")
