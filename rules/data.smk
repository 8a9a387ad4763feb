rule prepare_data:
    output:
        train=DATA + "/train.csv",
        valid=DATA + "/valid.csv",
        test=DATA + "/test.csv",
        item_json=DATA + "/item.json",
        info=DATA + "/info.txt",
        stats=DATA + "/data_stats.json",
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
