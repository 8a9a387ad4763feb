rule build_sids:
    input:
        unpack(get_sid_source),
        emb="results/{dataset}/emb/{dataset}.emb-{encoder}-td.npy",
        train="results/{dataset}/data/train.csv",
        valid="results/{dataset}/data/valid.csv",
        test="results/{dataset}/data/test.csv",
        item_json="results/{dataset}/data/item.json",
    output:
        index="results/{dataset}/sid/{encoder}/{sid}/{dataset}.index.json",
        stats="results/{dataset}/sid/{encoder}/{sid}/sid_stats.json",
        dataset=directory("results/{dataset}/sid/{encoder}/{sid}/dataset"),
        plot="results/{dataset}/sid/{encoder}/{sid}/sid_plots.png",
    log:
        "results/logs/build_sids/{dataset}-{encoder}-{sid}.log",
    benchmark:
        "results/benchmarks/build_sids/{dataset}-{encoder}-{sid}.tsv"
    conda:
        "../envs/genrec.yaml"
    threads: 2
    params:
        settings=settings_of("sid_methods", "sid"),
    script:
        "../workflow_scripts/build_sids.py"
