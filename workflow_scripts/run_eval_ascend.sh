#!/bin/bash
# The seed's launcher (research/cv/ViG/scripts/run_eval_ascend.sh) as a thin wrapper: evaluate a
# checkpoint on one Ascend device (the val split of the config's data_url). Runs in the foreground and
# returns eval.py's exit status; options after the three positional arguments go to eval.py (e.g.
# --data_url DIR --output eval.json). Without an Ascend device it prints what it would run and exits 2
# saying why.
if [ $# -lt 3 ]; then
    echo "Usage: bash workflow_scripts/run_eval_ascend.sh [DEVICE_ID] [CONFIG_PATH] [CHECKPOINT_PATH] [eval.py options]" >&2
    exit 2
fi
DEVICE_ID=$1
CONFIG_PATH=$2
CHECKPOINT_PATH=$3
shift 3
exec "${PYTHON:-python}" "$(dirname "$0")/eval.py" --device_target Ascend --device_id "$DEVICE_ID" \
    --vig_config "$CONFIG_PATH" --pretrained "$CHECKPOINT_PATH" "$@"
