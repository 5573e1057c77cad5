rule export:
    input:
        ckpt=WEIGHTS,
    output:
        branch_path(f"export/{ARCH}.mindir"),
    log:
        log_path("export", branch=True),
    benchmark:
        bench_path("export", branch=True)
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        script=script("export"),
        model=per_branch(model_args),
        network=per_branch(model_params),  # not in the command: a change reruns this step
    shell:
        "python {params.script} {params.model} --pretrained {input.ckpt:q} --output {output} > {log} 2>&1"
