rule evaluate:
    input:
        ckpt=WEIGHTS,
        data=data_input(),
    output:
        metrics=run_path("eval/metrics.json"),
        predictions=run_path("eval/predictions.json"),
    log:
        log_path("evaluate"),
    benchmark:
        bench_path("evaluate")
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        script=script("evaluate"),
        model=model_args(),
        data=data_dir_param,
        network=model_params(),  # not in the command: a change reruns this step
        batch_size=config.get("evaluate", {}).get("batch_size", 64),
    shell:
        "python {params.script} {params.model} --pretrained {input.ckpt:q} --data_url {params.data:q} "
        "--split val --batch_size {params.batch_size} --output {output.metrics} "
        "--predictions {output.predictions} > {log} 2>&1"
