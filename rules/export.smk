rule export:
    input:
        ckpt=WEIGHTS,
    output:
        run_path(f"export/{ARCH}.mindir"),
    log:
        log_path("export"),
    benchmark:
        bench_path("export")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        script=script("export"),
        model=model_args(),
        network=model_params(),  # not in the command: a change reruns this step
    shell:
        "python {params.script} {params.model} --pretrained {input.ckpt:q} --output {output} > {log} 2>&1"
