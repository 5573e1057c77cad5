# An ablation (config key `ablation`): every variant is a branch of the DAG (results/<run>/ablation/<variant>/)
# that trains, evaluates and deploys through the same rules as the run itself; these two rules measure
# each branch's model and compare the branches in one table (CSV, and an HTML page for the report).
rule profile_model:
    input:
        ckpt=WEIGHTS,
    output:
        branch_path("model/profile.json"),
    log:
        log_path("profile_model", branch=True),
    benchmark:
        bench_path("profile_model", branch=True)
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        script=script("profile_model"),
        model=per_branch(model_args),
        network=per_branch(model_params),  # not in the command: a change reruns this step
        batch_size=config.get("evaluate", {}).get("batch_size", 64),
    shell:
        "python {params.script} {params.model} --pretrained {input.ckpt:q} --batch_size {params.batch_size} "
        "--output {output} > {log} 2>&1"


rule ablation_table:
    input:
        summaries=branch_files("summary.json"),
        profiles=branch_files("model/profile.json"),
        metrics=branch_files("train/metrics.jsonl"),
        train_benchmarks=branch_files("benchmarks/train.tsv"),
    output:
        csv=ABLATION_TABLE,
        html=report(
            run_path("ablation/table.html"),
            caption="../report/ablation_table.rst",
            category="Ablation",
        ),
    log:
        log_path("ablation_table"),
    benchmark:
        bench_path("ablation_table")
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        script=script("ablation_table"),
        variants=variant_args(),
        title=f"Ablation of {config['run_name']} ({MODEL_CONFIG})",
    shell:
        "python {params.script} {params.variants} --title {params.title:q} --csv {output.csv} "
        "--html {output.html} > {log} 2>&1"
