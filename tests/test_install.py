"""A fresh, non-editable `pip install .` carries its schemas: every shipped config loads with it.

The package is built from a copy of `pyproject.toml` and `vig/` (so the build writes nothing into the
repository) and installed into a new venv. The dependencies come from this interpreter's site-packages,
made visible through a `.pth` file (appended after the venv's own site-packages, so the installed `vig`
wins); `--ignore-installed` keeps pip from touching any `vig` it can see there. The check runs from a
folder outside the repository, without PYTHONPATH, and proves which `vig` it imported.
"""
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL_CONFIGS = sorted((REPO / "config" / "models").glob("*.yaml"))
WORKFLOW_CONFIGS = sorted((REPO / "config").glob("*.yaml"))

LOAD_EVERY_CONFIG = """
import json, sys
from pathlib import Path

import jsonschema, yaml
import vig
from vig.config import SCHEMA_PATH, WORKFLOW_SCHEMA_PATH, load_model_config, workflow_schema

repo, model_configs, workflow_configs = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
loaded = {path: load_model_config(path)["arch"] for path in model_configs}
for path in workflow_configs:
    config = yaml.safe_load(Path(path).read_text())
    jsonschema.Draft202012Validator(workflow_schema()).validate(config)
    loaded[path] = load_model_config(Path(repo) / config["model_config"])["arch"]
print(json.dumps({"vig": vig.__file__, "schemas": [str(SCHEMA_PATH), str(WORKFLOW_SCHEMA_PATH)],
                  "loaded": loaded}))
"""


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv, cwd):
    proc = subprocess.run(argv, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_non_editable_install_loads_every_shipped_config(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO / "vig", source / "vig", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.o"))
    shutil.copy(REPO / "pyproject.toml", source)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    venv_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          cwd=tmp_path).strip())
    (venv_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--ignore-installed",
          "--no-index", source], cwd=tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    report = json.loads(_run([python, "-c", LOAD_EVERY_CONFIG, REPO, ",".join(map(str, MODEL_CONFIGS)),
                              ",".join(map(str, WORKFLOW_CONFIGS))], cwd=outside).splitlines()[-1])

    installed = venv_site / "vig"
    assert Path(report["vig"]).parent == installed, f"imported {report['vig']}, not the installed package"
    assert all(Path(schema).parent == installed / "schema" and Path(schema).is_file()
               for schema in report["schemas"])
    assert len(MODEL_CONFIGS) >= 4 and len(WORKFLOW_CONFIGS) >= 2
    assert sorted(report["loaded"]) == sorted(map(str, MODEL_CONFIGS + WORKFLOW_CONFIGS))
    assert report["loaded"][str(REPO / "config" / "models" / "vig_s_patch16_224.yaml")] == "vig_s_patch16_224"
