#!/usr/bin/env python
"""The seed's name for evaluate.py, so its command runs as written:

    python workflow_scripts/eval.py --device_id 0 --device_target Ascend \\
        --vig_config config/models/vig_s_patch16_224.yaml --pretrained ./ckpt_0/vig_s_patch16_224.ckpt

Every option of evaluate.py works here (see --help).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate import run, run_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(run, prog="eval.py"))
