rule prepare_demo_dataset:
    output:
        directory(run_path("dataset/images")),
    log:
        log_path("prepare_demo_dataset"),
    benchmark:
        bench_path("prepare_demo_dataset")
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        script=script("prepare_demo_dataset"),
        image_size=config["data"].get("demo_image_size", 32),
    shell:
        "python {params.script} --output {output} --image_size {params.image_size} > {log} 2>&1"


rule verify_dataset:
    input:
        data=data_input(),
    output:
        run_path("dataset/manifest.json"),
    log:
        log_path("verify_dataset"),
    benchmark:
        bench_path("verify_dataset")
    conda:
        ENV
    threads: config["data"].get("verify_workers", 2)
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        script=script("verify_dataset"),
        data=data_dir_param,
        full_decode="--full_decode" if config["data"].get("full_decode", True) else "",
    shell:
        "python {params.script} --data_url {params.data:q} --output {output} --workers {threads} "
        "{params.full_decode} > {log} 2>&1"
