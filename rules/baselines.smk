rule baseline_popularity:
    input:
        train=DATA + "/train.csv",
        test=DATA + "/test.csv",
        item_json=DATA + "/item.json",
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
