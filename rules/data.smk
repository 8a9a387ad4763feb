rule prepare_data:
    output:
        train="results/{dataset}/data/train.csv",
        valid="results/{dataset}/data/valid.csv",
        test="results/{dataset}/data/test.csv",
        item_json="results/{dataset}/data/item.json",
        info="results/{dataset}/data/info.txt",
        stats="results/{dataset}/data/data_stats.json",
    params:
        settings=settings_of("datasets", "dataset"),
    log:
        "results/logs/prepare_data/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_data/{dataset}.tsv"
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/prepare_data.py"
