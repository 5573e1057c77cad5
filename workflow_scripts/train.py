#!/usr/bin/env python
"""Train a ViG from a model YAML (the seed model zoo's keys), resumably, on 1..N ranks.

    python workflow_scripts/train.py --vig_config config/models/vig_demo.yaml --data_url data/demo \\
        --output_ckpt out/vig_demo.ckpt --metrics out/metrics.jsonl --state_root state --resume auto
    python workflow_scripts/train.py --device_id 0 --device_target Ascend \\
        --vig_config config/models/vig_s_patch16_224.yaml          # the seed's command, as written

With --pretrained (or the YAML's `pretrained`) training starts from those weights: a checkpoint of
this project or an original PyTorch .pth. When num_classes differs from the file's, the classifier's
last layer starts fresh (fine-tuning); the file's sha256 is part of the training hash.

Every epoch the full state (model, optimizer, EMA, loss scaler, epoch, config hash) is written
atomically to STATE_ROOT/<config hash>/; `--resume auto` continues from the newest valid one. With
--rank_table the job runs data parallel: msrun on CPU/GPU, one process per device on Ascend.
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # before MindSpore is imported anywhere
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a plain clone

from vig.cli import Parser, add_config_key_flags  # noqa: E402
from vig.config import DEFAULTS, add_config_arguments, config_from_args  # noqa: E402
from vig.train.cli import (UsageError, add_data_argument, add_launch_arguments, check_data_dir,  # noqa: E402
                           in_launched_worker, launch_or_init, run_cli, script_argv)
from vig.weights import add_pretrained_argument, pretrained_path  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__)
    add_config_arguments(parser)
    add_data_argument(parser)
    add_pretrained_argument(parser)
    parser.add_argument("--output_ckpt", metavar="PATH",
                        help="the final weights as a MindSpore .ckpt (the config's final_weights: last, best or "
                             "ema; unset, ema when ema is on, else last); rank 0 writes it (default: "
                             "ckpt_0/<arch>.ckpt, where the seed's eval command looks)")
    parser.add_argument("--metrics", metavar="PATH",
                        help="JSON lines, one record per epoch: epoch, train_loss, lr, val_top1, val_top5, val_loss, "
                             "val_images, images/s, seconds; the last also final_weights and final_epoch "
                             "(rewritten atomically after every epoch by rank 0)")
    parser.add_argument("--state_root", default="train_state", metavar="DIR",
                        help="resumable per-epoch state lives in DIR/<training hash of the config>/ "
                             "(keep it out of Snakemake outputs) (default %(default)s)")
    parser.add_argument("--resume", default="auto", metavar="auto|none|PATH",
                        help="auto: newest valid state in the config's state folder (default); none: start fresh; "
                             "PATH: that state file, refused if its config hash differs")
    plan = parser.add_argument_group("time plan (instead of training)")
    plan.add_argument("--plan", action="store_true",
                      help="build the model and data pipeline for this topology, time a burst of real steps after "
                           "warm-up, print global batch, accumulation, scaled LR, steps per epoch, s/step, img/s "
                           "(and the pipeline's alone) and the projected wall time of the configured epochs; "
                           "trains nothing, saves no state")
    plan.add_argument("--plan_steps", type=int, default=20, metavar="N",
                      help="timed steps of --plan, after 2 warm-up steps (default %(default)s)")
    plan.add_argument("--plan_output", metavar="JSON", help="also write the plan as JSON (rank 0)")
    add_launch_arguments(parser)
    add_config_key_flags(parser, DEFAULTS)
    return parser


def run(argv=None) -> int:
    argv = script_argv(argv)
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    data_url = args.data_url or cfg["data_url"]
    check_data_dir(data_url, ("train", "val"))
    cfg["data_url"] = data_url
    pretrained_path(args, cfg, required=False)
    from vig.config import training_hash
    from vig.train import checkpoint

    if args.resume not in ("auto", "none"):
        if not Path(args.resume).is_file():
            raise UsageError(f"--resume {args.resume}: state file not found")
        info = checkpoint.verify_state(Path(args.resume))
        checkpoint.check_config_hash(info.config_hash, training_hash(cfg), info.path)
    folder = checkpoint.state_dir(args.state_root, training_hash(cfg))
    # a second trainer, or no room for the next state: stop now (a folder not made yet has neither, and
    # is left unmade so that input the trainer refuses before any work leaves nothing behind)
    if folder.is_dir() and not (in_launched_worker() or args.dry_run_launch):
        checkpoint.lock_state_folder(folder).close()
        checkpoint.ensure_room_for_state(folder)
    if args.plan_steps < 1:
        raise UsageError(f"--plan_steps {args.plan_steps}: expected at least 1 timed step")
    code, ctx = launch_or_init(args, cfg, __file__, argv)
    if code is not None:
        return code
    if args.plan:
        return print_plan(args, cfg, data_url, ctx)

    from vig.train.loop import TrainOptions, train

    output_ckpt = args.output_ckpt or str(Path("ckpt_0") / f"{cfg['arch']}.ckpt")
    train(TrainOptions(cfg=cfg, data_url=data_url, state_root=args.state_root, output_ckpt=output_ckpt,
                       metrics=args.metrics, resume=args.resume, log_dir=args.log_dir, ctx=ctx))
    return 0


def print_plan(args, cfg, data_url, ctx) -> int:
    from vig.io import write_json
    from vig.train.loop import TrainOptions
    from vig.train.plan import format_plan, make_plan

    plan = make_plan(TrainOptions(cfg=cfg, data_url=data_url, state_root=args.state_root, log_dir=args.log_dir,
                                  ctx=ctx), steps=args.plan_steps)
    if ctx.rank == 0:
        print(format_plan(plan), flush=True)
        if args.plan_output:
            write_json(args.plan_output, plan)
    return 0


def main(argv=None) -> int:
    return run_cli(run, argv, prog="train.py")


if __name__ == "__main__":
    sys.exit(main())
