"""Data parallel on CPU with msrun: two workers stay identical and match one process on the global batch,
also with gradient accumulation; every rank takes rank 0's BatchNorm statistics before validating."""
import os
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# Runs under msrun ("dp": each rank takes its half of every global batch, gradients all-reduced by
# nn.DistributedGradReducer) or alone ("single": the whole batch, the network applied per half so each
# half sees its own BatchNorm statistics, as a rank does). Same seed, same batches, same TrainStep. Then
# again with accumulation_step 2: each rank's half in 2 micro-batches (reduced once per step), the single
# process's batch of 8 applied per quarter (each quarter is one rank's micro-batch, with its own statistics).
WORKER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor, nn, ops
    from mindspore.communication import GlobalComm
    from vig.config import DEFAULTS
    from vig.models import create_model
    from vig.train.distributed import init_process
    from vig.train.loss import SoftTargetCrossEntropy
    from vig.train.optim import build_optimizer
    from vig.train.schedule import build_lr_schedule
    from vig.train.step import build_loss_scaler, build_train_step

    mode, out, global_batch, steps = sys.argv[1], sys.argv[2], 8, 3
    ctx = init_process("CPU", 0, 2 if mode == "dp" else 1, None)

    class PerChunk(nn.Cell):
        def __init__(self, inner, chunks):
            super().__init__(auto_prefix=False)
            self.inner, self.chunks = inner, chunks
        def construct(self, x):
            size = x.shape[0] // self.chunks
            return ops.cat([self.inner(x[i * size:(i + 1) * size]) for i in range(self.chunks)])

    for accumulation in (1, 2):
        ms.set_seed(0)
        np.random.seed(0)
        net = create_model("vig_ti_224_gelu", num_classes=10, channels=(16,), blocks=(2,), k=3, image_size=32,
                           stem_stride=8)
        net.set_train(True)
        names = [p.name for p in net.trainable_params()]
        # momentum SGD: its update is proportional to the gradient, so a wrong scale (a sum for a mean) shows;
        # AdamW's is nearly scale-free, and it turns summation-order noise in near-zero gradients into
        # whole-step differences. A small LR: BatchNorm over micro-batches of 2 amplifies rounding differences
        # step by step (3 steps at lr 0.05: 6e-5 apart, at 0.01: 8e-7, one process with and without accumulation)
        cfg = dict(DEFAULTS, epochs=1, warmup_length=0, optimizer="momentum", base_lr=0.01, lr_linear_scaling=False,
                   amp_level="O0", is_dynamic_loss_scale=True)
        opt = build_optimizer(cfg, net, build_lr_schedule(cfg, steps))
        reducer = None
        if mode == "dp":
            reducer = nn.DistributedGradReducer(opt.parameters, mean=True, degree=ctx.world_size,
                                                group=GlobalComm.WORLD_COMM_GROUP)
        model = net if mode == "dp" else PerChunk(net, 2 * accumulation)
        step = build_train_step(model, SoftTargetCrossEntropy(), opt, build_loss_scaler(cfg), 5.0, reducer,
                                micro_batches=accumulation if mode == "dp" else 1)
        tag = f"{{mode}}_n{{accumulation}}"
        initial = {{n: p.asnumpy().copy() for n, p in zip(names, net.trainable_params())}}
        np.savez(os.path.join(out, f"{{tag}}_initial{{ctx.rank}}.npz"), **initial)
        for i in range(steps):
            rng = np.random.default_rng(i)
            x = rng.standard_normal((global_batch, 3, 32, 32)).astype(np.float32)
            y = rng.dirichlet(np.ones(10), global_batch).astype(np.float32)
            batches = [(x, y)]
            if mode == "dp":  # this rank's share of the global batch, in `accumulation` micro-batches
                share = global_batch // ctx.world_size
                x, y = x[ctx.rank * share:(ctx.rank + 1) * share], y[ctx.rank * share:(ctx.rank + 1) * share]
                micro = share // accumulation
                batches = [(x[j * micro:(j + 1) * micro], y[j * micro:(j + 1) * micro]) for j in range(accumulation)]
            for x, y in batches:
                done = step(Tensor(x), Tensor(y))
            assert bool(done[1].asnumpy())
        params = {{n: p.asnumpy() for n, p in zip(names, net.trainable_params())}}
        np.savez(os.path.join(out, f"{{tag}}_rank{{ctx.rank}}.npz"), **params)
    if mode == "dp":  # what the loop does to BatchNorm statistics before each validation
        from mindspore import Parameter
        from vig.train.distributed import copy_from_rank0
        stats = [Parameter(Tensor(np.full((2, 3), ctx.rank + 1.5, np.float32)), name="moving_mean")]
        copy_from_rank0(stats, ctx.rank)
        np.save(os.path.join(out, f"stats{{ctx.rank}}.npy"), stats[0].asnumpy())
    print(f"worker {{mode}} rank {{ctx.rank}}/{{ctx.world_size}} done", flush=True)
""")


def test_two_msrun_workers_match_each_other_and_a_single_process(tmp_path):
    from vig.train.distributed import Topology, launch_plan, run_plan

    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO)))
    out = str(tmp_path)
    plan = launch_plan("msrun", Topology(world_size=2, local_ranks=[0, 1], device_ids=[0, 1]), node_rank=0,
                       master_addr="127.0.0.1", master_port=8000 + os.getpid() % 1000, log_dir=str(tmp_path / "logs"),
                       script=str(script), argv=["dp", out])
    assert plan[0]["argv"][:3] == ["msrun", "--worker_num=2", "--local_worker_num=2"]
    plan[0]["argv"] = plan[0]["argv"][:-2]  # the worker script takes no --launcher option
    code = run_plan(plan, log=lambda line: None)
    logs = "\n".join(p.read_text()[-2000:] for p in (tmp_path / "logs").glob("worker_*.log"))
    assert code == 0, logs
    import subprocess

    single = subprocess.run([sys.executable, str(script), "single", out], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "GLOG_v": "3"})
    assert single.returncode == 0, single.stderr[-3000:]

    for accumulation in (1, 2):  # batch 4 per rank, or 2 micro-batches of 2 per rank: global batch 8
        rank0, rank1, alone = (dict(np.load(tmp_path / f"{name}_n{accumulation}_rank{rank}.npz"))
                               for name, rank in (("dp", 0), ("dp", 1), ("single", 0)))
        assert rank0.keys() == rank1.keys() == alone.keys() and len(rank0) > 10
        initial = dict(np.load(tmp_path / f"single_n{accumulation}_initial0.npz"))
        for name in rank0:
            np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)  # ranks identical
            np.testing.assert_allclose(rank0[name], alone[name], rtol=1e-4, atol=1e-6, err_msg=f"N={accumulation} {name}")
        np.testing.assert_array_equal(dict(np.load(tmp_path / f"dp_n{accumulation}_initial0.npz"))["pos_embed"],
                                      initial["pos_embed"])
        moved = [name for name in rank0 if not np.allclose(rank0[name], initial[name], rtol=0, atol=1e-7)]
        # the three steps moved every parameter but the per-channel shifts (conv biases, the backbone's BatchNorm
        # betas) that the next BatchNorm cancels: their gradient is zero, so momentum SGD leaves them (22 of 63)
        assert len(moved) > 0.6 * len(rank0), sorted(set(rank0) - set(moved))
    # every rank now holds rank 0's statistics (its own, as in the seed, and the exported ones), not a mean
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"stats{rank}.npy"), np.full((2, 3), 1.5, np.float32))


def test_train_cli_under_msrun_from_a_rank_table(tmp_path):
    """The real CLI: --rank_table with 2 CPU devices -> msrun, 2 workers; ranks end in sync, only rank 0
    writes outputs, validation counts every image once across the shards."""
    import json
    import subprocess

    from test_train_loop import TINY_YAML, write_digits

    data = write_digits(tmp_path / "digits", train_per_class=4, val_per_class=2)  # 2 steps of 8 per rank
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML.replace("epochs: 3", "epochs: 1"))
    table = {"version": "1.0", "server_count": "1", "status": "completed", "server_list": [
        {"server_id": "127.0.0.1", "host_nic_ip": "reserve",
         "device": [{"device_id": str(i), "device_ip": "0.0.0.0", "rank_id": str(i)} for i in range(2)]}]}
    (tmp_path / "hccl_1s_2p.json").write_text(json.dumps(table))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO / "workflow_scripts" / "train.py"), "--vig_config", str(config),
         "--data_url", str(data), "--rank_table", str(tmp_path / "hccl_1s_2p.json"), "--master_port",
         str(9000 + os.getpid() % 1000), "--output_ckpt", str(out / "w.ckpt"), "--metrics", str(out / "m.jsonl"),
         "--state_root", str(out / "state"), "--log_dir", str(out / "logs")],
        capture_output=True, text=True, timeout=400, env={**os.environ, "GLOG_v": "3"})
    logs = {rank: (out / "logs" / f"train_rank{rank}.log").read_text() for rank in (0, 1)}
    assert result.returncode == 0, result.stderr[-2000:] + logs[1][-2000:]
    digests = [line.split()[-1] for rank in (0, 1) for line in logs[rank].splitlines() if "weights sha256" in line]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert "step 2/2" in logs[1] and "rank 1/2" in (out / "logs" / "worker_1.log").read_text()
    (record,) = [json.loads(line) for line in (out / "m.jsonl").read_text().splitlines()]
    assert record["val_images"] == 20  # 10 + 10 shards summed
    assert (out / "w.ckpt").is_file() and len(list((out / "state").glob("*/state-e0001.ckpt"))) == 1

    # evaluate.py on the same 2 ranks: each shard's per-image predictions land in the rows of its own images
    evaluate = [sys.executable, str(REPO / "workflow_scripts" / "evaluate.py"), "--vig_config", str(config),
                "--data_url", str(data), "--checkpoint", str(out / "w.ckpt"), "--batch_size", "4"]
    reports = {}
    for name, launch in (("ranks", ["--rank_table", str(tmp_path / "hccl_1s_2p.json"), "--master_port",
                                    str(9001 + os.getpid() % 1000), "--log_dir", str(out / "eval_logs")]),
                         ("single", [])):
        evaluated = subprocess.run(evaluate + launch + ["--output", str(out / f"{name}.json"), "--predictions",
                                                        str(out / f"{name}_predictions.json")],
                                   capture_output=True, text=True, timeout=300, env={**os.environ, "GLOG_v": "3"})
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        reports[name] = json.loads((out / f"{name}_predictions.json").read_text())["images"]
    assert [r["image"] for r in reports["ranks"]] == [p.stem for p in sorted((data / "val").glob("*/*"))]
    for got, want in zip(reports["ranks"], reports["single"]):
        assert (got["image"], got["label"], got["top"]) == (want["image"], want["label"], want["top"])
        np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-5)
