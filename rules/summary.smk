rule summary:
    input:
        eval=rules.evaluate.output.metrics,
        eval_predictions=rules.evaluate.output.predictions,
        accuracy=rules.postprocess.output.accuracy,
        predictions=rules.postprocess.output.predictions,
        latency=rules.infer.output.latency,
        metrics=[] if FROM_WEIGHTS else rules.train.output.metrics,
        weights=WEIGHTS,
    output:
        run_path("summary.json"),
    log:
        log_path("summary"),
    benchmark:
        bench_path("summary")
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        script=script("summary"),
        origin=summary_origin(),
    shell:
        "python {params.script} --eval {input.eval} --eval_predictions {input.eval_predictions} "
        "--deployed MINDIR {input.accuracy} {input.predictions} --latency {input.latency} "
        "--weights {input.weights:q} {params.origin} --output {output} 2>&1 | tee {log}"


rule plot_training_curves:
    input:
        rules.train.output.metrics,
    output:
        report(
            run_path("report/training_curves.png"),
            caption="../report/training_curves.rst",
            category="Training",
        ),
    log:
        log_path("plot_training_curves"),
    benchmark:
        bench_path("plot_training_curves")
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        script=script("report_plots"),
    shell:
        "python {params.script} --kind curves --inputs {input} --output {output} > {log} 2>&1"


rule plot_confusion_matrix:
    input:
        rules.evaluate.output.metrics,
    output:
        report(
            run_path("report/confusion_matrix.png"),
            caption="../report/confusion_matrix.rst",
            category="Evaluation",
        ),
    log:
        log_path("plot_confusion_matrix"),
    benchmark:
        bench_path("plot_confusion_matrix")
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        script=script("report_plots"),
    shell:
        "python {params.script} --kind confusion --inputs {input} --output {output} > {log} 2>&1"


rule plot_accuracy:
    input:
        rules.summary.output[0],
    output:
        report(
            run_path("report/accuracy.png"),
            caption="../report/accuracy.rst",
            category="Deployment",
        ),
    log:
        log_path("plot_accuracy"),
    benchmark:
        bench_path("plot_accuracy")
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        script=script("report_plots"),
    shell:
        "python {params.script} --kind accuracy --inputs {input} --output {output} > {log} 2>&1"


BENCHMARKED_STEPS = [
    "verify_dataset",
    *([] if FROM_WEIGHTS else ["rank_table", "train"]),
    "evaluate",
    "export",
    "preprocess_310",
    "infer",
    "postprocess",
    "summary",
]


rule plot_benchmarks:
    input:
        [bench_path(step) for step in BENCHMARKED_STEPS],
    output:
        report(
            run_path("report/benchmarks.png"),
            caption="../report/benchmarks.rst",
            category="Run time",
        ),
    log:
        log_path("plot_benchmarks"),
    benchmark:
        bench_path("plot_benchmarks")
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        script=script("report_plots"),
    shell:
        "python {params.script} --kind benchmarks --inputs {input} --output {output} > {log} 2>&1"


rule plot_graph:
    input:
        ckpt=WEIGHTS,
        data=data_input(),
    output:
        graph=report(
            run_path("report/patch_graph.png"),
            caption="../report/patch_graph.rst",
            category="Graph",
        ),
        health=report(
            run_path("report/graph_health.png"),
            caption="../report/graph_health.rst",
            category="Graph",
        ),
        numbers=run_path("graph/health.json"),
    log:
        log_path("plot_graph"),
    benchmark:
        bench_path("plot_graph")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        script=script("plot_graph"),
        model=model_args(),
        data=data_dir_param,
        network=model_params(),  # a new model shape reruns the drawing
        which=graph_images_args(),
    shell:
        "python {params.script} {params.model} --pretrained {input.ckpt:q} --data_url {params.data:q} "
        "{params.which} --graph_png {output.graph} --health_png {output.health} "
        "--health_json {output.numbers} > {log} 2>&1"
