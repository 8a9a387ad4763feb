rule evaluate:
    input:
        policy="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/rl-{rl}/policy.json",
        split=get_eval_split,
        sids="results/{dataset}/sid/{encoder}/{sid}/{dataset}.index.json",
    output:
        results="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/rl-{rl}/eval_results.json",
        metrics="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/rl-{rl}/metrics.json",
    log:
        "results/logs/evaluate/{dataset}/{encoder}-{sid}-{sft}-{rl}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{encoder}-{sid}-{sft}-{rl}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        settings=settings_of("eval"),
    script:
        "../workflow_scripts/evaluate.py"
