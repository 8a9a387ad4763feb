rule evaluate:
    input:
        policy=RUN_DIR + "/policy.json",
        test=DATA + "/test.csv",
        sids=SID_DIR + "/{dataset}.index.json",
    output:
        results=RUN_DIR + "/eval_results.json",
        metrics=RUN_DIR + "/metrics.json",
    params:
        settings=settings_of("eval"),
    threads: 2
    resources:
        gpu=1,
    log:
        "results/logs/evaluate/{dataset}/{encoder}-{sid}-{sft}-{rl}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{encoder}-{sid}-{sft}-{rl}.tsv"
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/evaluate.py"
