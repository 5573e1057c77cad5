rule rank_table:
    output:
        run_path("cluster/rank_table.json"),
    log:
        log_path("rank_table"),
    benchmark:
        bench_path("rank_table")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        script=script("rank_table"),
        cluster=json.dumps(rank_table_section(), sort_keys=True),
    shell:
        "python {params.script} --config-json {params.cluster:q} --output {output} > {log} 2>&1"
