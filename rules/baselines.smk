rule baseline_popularity:
    input:
        train="results/{dataset}/data/train.csv",
        split=get_eval_split,
        item_json="results/{dataset}/data/item.json",
    output:
        results="results/{dataset}/baselines/popularity/eval_results.json",
        metrics="results/{dataset}/baselines/popularity/metrics.json",
    log:
        "results/logs/baselines/{dataset}-popularity.log",
    conda:
        "../envs/genrec.yaml"
    params:
        settings=lambda wc: stage_json(config, "baselines", "popularity"),
        protocol=eval_protocol,
    script:
        "../workflow_scripts/baseline_popularity.py"


rule baseline_seqrec_train:
    input:
        train="results/{dataset}/data/train.csv",
        valid="results/{dataset}/data/valid.csv",
        item_json="results/{dataset}/data/item.json",
    output:
        scorer=directory("results/{dataset}/baselines/{seqrec}/scorer"),
    log:
        "results/logs/baselines/{dataset}-{seqrec}-train.log",
    benchmark:
        "results/benchmarks/baselines/{dataset}-{seqrec}-train.tsv"
    wildcard_constraints:
        seqrec="|".join(SEQREC_KINDS),
    conda:
        "../envs/genrec.yaml"
    threads: 2
    params:
        settings=settings_of("baselines", "seqrec"),
    script:
        "../workflow_scripts/baseline_seqrec_train.py"


rule baseline_seqrec:
    input:
        scorer=rules.baseline_seqrec_train.output.scorer,
        split=get_eval_split,
        item_json="results/{dataset}/data/item.json",
    output:
        results="results/{dataset}/baselines/{seqrec}/eval_results.json",
        metrics="results/{dataset}/baselines/{seqrec}/metrics.json",
    log:
        "results/logs/baselines/{dataset}-{seqrec}.log",
    benchmark:
        "results/benchmarks/baselines/{dataset}-{seqrec}.tsv"
    wildcard_constraints:
        seqrec="|".join(SEQREC_KINDS),
    conda:
        "../envs/genrec.yaml"
    threads: 2
    params:
        protocol=eval_protocol,
    script:
        "../workflow_scripts/baseline_seqrec.py"
