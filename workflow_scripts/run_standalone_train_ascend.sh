#!/bin/bash
# The seed's launcher (research/cv/ViG/scripts/run_standalone_train_ascend.sh) as a thin wrapper:
# train on one Ascend device. Runs in the foreground and returns train.py's exit status; options
# after the two positional arguments go to train.py (e.g. --data_url DIR --output_ckpt PATH).
# Without an Ascend device it prints what it would run and exits 2 saying why.
if [ $# -lt 2 ]; then
    echo "Usage: bash workflow_scripts/run_standalone_train_ascend.sh [DEVICE_ID] [CONFIG_PATH] [train.py options]" >&2
    exit 2
fi
DEVICE_ID=$1
CONFIG_PATH=$2
shift 2
exec "${PYTHON:-python}" "$(dirname "$0")/train.py" --device_id "$DEVICE_ID" --device_target Ascend \
    --vig_config "$CONFIG_PATH" "$@"
