#!/bin/bash
# The seed's launcher (research/cv/ViG/scripts/run_distribute_train_ascend.sh) as a thin wrapper:
# train.py starts one process per Ascend device of this server listed in RANK_TABLE_FILE, with the
# seed's RANK_TABLE_FILE/DEVICE_ID/RANK_ID/RANK_SIZE/DEVICE_NUM (sizes from the table, not a fixed 8;
# logs in --log_dir, default logs/worker_<rank>.log). Runs in the foreground and returns the first
# failing worker's exit status. Options after the two positional arguments go to train.py (e.g.
# --node_rank 1 on the second server). Without Ascend devices it prints the per-device commands and
# exits 2 saying why.
if [ $# -lt 2 ]; then
    echo "Usage: bash workflow_scripts/run_distribute_train_ascend.sh [RANK_TABLE_FILE] [CONFIG_PATH] [train.py options]" >&2
    exit 2
fi
RANK_TABLE_FILE=$1
CONFIG_PATH=$2
shift 2
exec "${PYTHON:-python}" "$(dirname "$0")/train.py" --device_target Ascend --rank_table "$RANK_TABLE_FILE" \
    --vig_config "$CONFIG_PATH" "$@"
