# One export per deploy target ({target}: mindir, onnx), from the same weights.
rule export:
    input:
        ckpt=WEIGHTS,
    output:
        branch_path(f"export/{ARCH}.{{target}}"),
    log:
        log_path("export_{target}", branch=True),
    benchmark:
        bench_path("export_{target}", branch=True)
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
        file_format=lambda wildcards: file_format(wildcards.target),
    shell:
        "python {params.script} {params.model} --pretrained {input.ckpt:q} --file_format {params.file_format} "
        "--output {output} > {log} 2>&1"
