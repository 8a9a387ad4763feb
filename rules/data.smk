rule prepare_data:
    input:
        get_dataset_sources,
    output:
        train_csv="results/{dataset}/data/train.csv",
        valid_csv="results/{dataset}/data/valid.csv",
        test_csv="results/{dataset}/data/test.csv",
        item_json="results/{dataset}/data/item.json",
        info_txt="results/{dataset}/data/info.txt",
        stats_json="results/{dataset}/data/data_stats.json",
        source_index="results/{dataset}/data/source.index.json",
    log:
        "results/logs/prepare_data/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_data/{dataset}.tsv"
    conda:
        "../envs/genrec.yaml"
    params:
        settings=settings_of("datasets", "dataset"),
    script:
        "../workflow_scripts/prepare_data.py"
