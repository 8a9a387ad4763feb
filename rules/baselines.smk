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


rule baseline_seqrec:
    input:
        train="results/{dataset}/data/train.csv",
        valid="results/{dataset}/data/valid.csv",
        test="results/{dataset}/data/test.csv",
        item_json="results/{dataset}/data/item.json",
    output:
        results="results/{dataset}/baselines/{seqrec}/eval_results.json",
        metrics="results/{dataset}/baselines/{seqrec}/metrics.json",
        scorer=directory("results/{dataset}/baselines/{seqrec}/scorer"),
    wildcard_constraints:
        seqrec="sasrec|gru4rec",
    params:
        settings=lambda wc: stage_json(config, "baselines", wc.seqrec),
    threads: 2
    log:
        "results/logs/baselines/{dataset}-{seqrec}.log",
    benchmark:
        "results/benchmarks/baselines/{dataset}-{seqrec}.tsv"
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/baseline_seqrec.py"
