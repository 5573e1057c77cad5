# Only the final artefacts are declared: Snakemake deletes declared outputs of an interrupted job.
# The per-epoch state lives in train_state/<training hash>/, outside the outputs, so
# `snakemake --rerun-incomplete` resumes from the last finished epoch. Each branch (an ablation's
# variant) has its own outputs and state folder, so each resumes on its own.
rule train:
    input:
        manifest=run_path("dataset/manifest.json"),
        rank_table=run_path("cluster/rank_table.json"),
        data=data_input(),
        pretrained=PRETRAINED or [],
    output:
        ckpt=branch_path(f"train/{ARCH}.ckpt"),
        metrics=branch_path("train/metrics.jsonl"),
    log:
        log_path("train", branch=True),
    benchmark:
        bench_path("train", branch=True)
    conda:
        ENV
    threads: config.get("train", {}).get("threads", 2)
    resources:
        **TRAIN_RESOURCES,
    params:
        launch=launch_prefix(),
        script=script("train"),
        model=per_branch(model_args),
        data=data_dir_param,
        state_root=branch_path("train_state"),
        log_dir=branch_path("logs/train_workers"),
        master_port=config["cluster"].get("master_port", 8118),
        master_addr=(
            f"--master_addr {config['cluster']['master_addr']}"
            if "master_addr" in config["cluster"]
            else ""
        ),
        training=per_branch(training_params),  # not in the command: a change reruns training
        pretrained=f"--pretrained {shlex.quote(PRETRAINED)}" if PRETRAINED else "",
    shell:
        "{params.launch} python {params.script} {params.model} --data_url {params.data:q} "
        "--rank_table {input.rank_table} --output_ckpt {output.ckpt} --metrics {output.metrics} "
        "--state_root {params.state_root} {params.pretrained} --resume auto --log_dir {params.log_dir} "
        "{params.master_addr} --master_port {params.master_port} > {log} 2>&1"


# train.plan: true makes this the only target: the same job as `train` (inputs, topology, resources)
# runs train.py --plan, which times a burst of real steps and projects the configured epochs' wall time.
rule train_plan:
    input:
        manifest=run_path("dataset/manifest.json"),
        rank_table=run_path("cluster/rank_table.json"),
        data=data_input(),
        pretrained=PRETRAINED or [],
    output:
        branch_path("train/plan.json"),
    log:
        log_path("train_plan", branch=True),
    benchmark:
        bench_path("train_plan", branch=True)
    conda:
        ENV
    threads: config.get("train", {}).get("threads", 2)
    resources:
        **TRAIN_RESOURCES,
    params:
        launch=launch_prefix(),
        script=script("train"),
        model=per_branch(model_args),
        data=data_dir_param,
        state_root=branch_path("train_state"),  # read only: the plan saves no state
        log_dir=branch_path("logs/train_plan_workers"),
        master_port=config["cluster"].get("master_port", 8118),
        master_addr=(
            f"--master_addr {config['cluster']['master_addr']}"
            if "master_addr" in config["cluster"]
            else ""
        ),
        pretrained=f"--pretrained {shlex.quote(PRETRAINED)}" if PRETRAINED else "",
        steps=config.get("train", {}).get("plan_steps", 20),
    shell:
        "{params.launch} python {params.script} {params.model} --data_url {params.data:q} "
        "--rank_table {input.rank_table} --plan --plan_steps {params.steps} --plan_output {output} "
        "--state_root {params.state_root} {params.pretrained} --log_dir {params.log_dir} "
        "{params.master_addr} --master_port {params.master_port} > {log} 2>&1"
