# The seed's Ascend-310 chain: preprocess to .bin (once, shared by the deploy targets and by the ablation
# variants that preprocess alike: common.preprocess_branch), then per deploy target ({target}) run
# the exported model on them (MINDIR: nn.GraphCell, ONNX: onnxruntime) and score the results.
rule preprocess_310:
    input:
        manifest=run_path("dataset/manifest.json"),
        data=data_input(),
    output:
        bins=directory(branch_path("infer/preprocess_Result/images")),
        labels=branch_path("infer/preprocess_Result/imagenet_label.json"),
    log:
        log_path("preprocess_310", branch=True),
    benchmark:
        bench_path("preprocess_310", branch=True)
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        script=script("preprocess_310"),
        model=per_branch(model_args, only=NETWORK_KEYS),
        data=data_dir_param,
        network=per_branch(model_params),  # not in the command: a change reruns this step
    shell:
        "python {params.script} {params.model} --data_url {params.data:q} --split val "
        "--output_dir {output.bins} --labels {output.labels} > {log} 2>&1"


rule infer:
    input:
        model=rules.export.output[0],
        bins=preprocessed(rules.preprocess_310.output.bins),
    output:
        results=directory(branch_path("infer/{target}/result_Files")),
        latency=branch_path("infer/{target}/latency.json"),
    log:
        log_path("infer_{target}", branch=True),
    benchmark:
        bench_path("infer_{target}", branch=True)
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        script=script("infer"),
        batch_size=config.get("infer", {}).get("batch_size", 16),
        device=MODEL_CFG["device_target"],  # where a MINDIR runs (onnxruntime runs on the CPU)
    shell:
        "python {params.script} --model {input.model} --input_dir {input.bins} "
        "--output_dir {output.results} --latency {output.latency} --batch_size {params.batch_size} "
        "--device_target {params.device} --threads {threads} > {log} 2>&1"


rule postprocess:
    input:
        results=rules.infer.output.results,
        labels=preprocessed(rules.preprocess_310.output.labels),
    output:
        accuracy=branch_path("infer/{target}/accuracy.json"),
        predictions=branch_path("infer/{target}/predictions.json"),
    log:
        log_path("postprocess_{target}", branch=True),
    benchmark:
        bench_path("postprocess_{target}", branch=True)
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        script=script("postprocess"),
    shell:
        "python {params.script} --result_dir {input.results} --labels {input.labels} "
        "--output {output.accuracy} --predictions {output.predictions} > {log} 2>&1"
