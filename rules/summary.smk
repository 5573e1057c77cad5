rule summary:
    input:
        eval=rules.evaluate.output.metrics,
        eval_predictions=rules.evaluate.output.predictions,
        accuracy=per_target(rules.postprocess.output.accuracy),
        predictions=per_target(rules.postprocess.output.predictions),
        latency=per_target(rules.infer.output.latency),
        metrics=[] if FROM_WEIGHTS else rules.train.output.metrics,
        weights=WEIGHTS,
    output:
        branch_path("summary.json"),
    log:
        log_path("summary", branch=True),
    benchmark:
        bench_path("summary", branch=True)
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        script=script("summary"),
        origin=per_branch(summary_origin),
        deployed=per_branch(deployed_args),
        tolerance=parity_tolerance_arg(),
    shell:
        "python {params.script} --eval {input.eval} --eval_predictions {input.eval_predictions} "
        "{params.deployed} --weights {input.weights:q} {params.origin} {params.tolerance} "
        "--output {output} > {log} 2>&1"


# The report's pictures: one rule per picture, each drawn by report_plots.py --kind from its inputs;
# the caption is report/<picture>.rst. The run-time plot times every step summary.json needs (given
# weights, train.from_weights, need no training: no rank table, no training, no training curves).
PLOTS = {
    **(
        {}
        if FROM_WEIGHTS
        else {"training_curves": ("curves", rules.train.output.metrics, "Training")}
    ),
    "confusion_matrix": ("confusion", rules.evaluate.output.metrics, "Evaluation"),
    "accuracy": ("accuracy", rules.summary.output[0], "Deployment"),
    "benchmarks": (
        "benchmarks",
        benchmarks_needed_by("summary"),
        "Run time",
    ),
}


for picture, (kind, picture_input, category) in PLOTS.items():

    rule:
        name:
            f"plot_{picture}"
        input:
            picture_input,
        output:
            report(
                branch_path(f"report/{picture}.png"),
                caption=f"../report/{picture}.rst",
                category=category,
                subcategory=branch_label,
            ),
        log:
            log_path(f"plot_{picture}", branch=True),
        benchmark:
            bench_path(f"plot_{picture}", branch=True)
        localrule: True
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=500,
            runtime=5,
        params:
            script=script("report_plots"),
            kind=kind,
        shell:
            "python {params.script} --kind {params.kind} --inputs {input} --output {output} > {log} 2>&1"


rule plot_graph:
    input:
        ckpt=WEIGHTS,
        data=data_input(),
    output:
        graph=report(
            branch_path("report/patch_graph.png"),
            caption="../report/patch_graph.rst",
            category="Graph",
            subcategory=branch_label,
        ),
        health=report(
            branch_path("report/graph_health.png"),
            caption="../report/graph_health.rst",
            category="Graph",
            subcategory=branch_label,
        ),
        numbers=branch_path("graph/health.json"),
    log:
        log_path("plot_graph", branch=True),
    benchmark:
        bench_path("plot_graph", branch=True)
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        script=script("plot_graph"),
        model=per_branch(model_args),
        data=data_dir_param,
        network=per_branch(model_params),  # a new model shape reruns the drawing
        which=graph_images_args(),
    shell:
        "python {params.script} {params.model} --pretrained {input.ckpt:q} --data_url {params.data:q} "
        "{params.which} --graph_png {output.graph} --health_png {output.health} "
        "--health_json {output.numbers} > {log} 2>&1"
