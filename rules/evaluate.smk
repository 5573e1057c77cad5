rule evaluate:
    input:
        ckpt=WEIGHTS,
        data=data_input(),
    output:
        metrics=branch_path("eval/metrics.json"),
        predictions=branch_path("eval/predictions.json"),
    log:
        log_path("evaluate", branch=True),
    benchmark:
        bench_path("evaluate", branch=True)
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        script=script("evaluate"),
        model=per_branch(model_args),
        data=data_dir_param,
        network=per_branch(model_params),  # not in the command: a change reruns this step
        batch_size=config.get("evaluate", {}).get("batch_size", 64),
    shell:
        "python {params.script} {params.model} --pretrained {input.ckpt:q} --data_url {params.data:q} "
        "--split val --batch_size {params.batch_size} --output {output.metrics} "
        "--predictions {output.predictions} > {log} 2>&1"
