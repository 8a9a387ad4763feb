rule baseline_popularity:
    input:
        train="results/{dataset}/data/train.csv",
        test="results/{dataset}/data/test.csv",
        item_json="results/{dataset}/data/item.json",
    output:
        results="results/{dataset}/baselines/popularity/eval_results.json",
        metrics="results/{dataset}/baselines/popularity/metrics.json",
    params:
        settings=lambda wc: stage_json(config, "baselines", "popularity"),
    log:
        "results/logs/baselines/{dataset}-popularity.log",
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/baseline_popularity.py"
