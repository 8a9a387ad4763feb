rule build_sids:
    input:
        emb="results/{dataset}/emb/{dataset}.emb-{encoder}-td.npy",
        train=DATA + "/train.csv",
        valid=DATA + "/valid.csv",
        test=DATA + "/test.csv",
        item_json=DATA + "/item.json",
    output:
        index=SID_DIR + "/{dataset}.index.json",
        stats=SID_DIR + "/sid_stats.json",
        dataset=directory(SID_DIR + "/dataset"),
    params:
        settings=settings_of("sid_methods", "sid"),
    threads: 2
    log:
        "results/logs/build_sids/{dataset}-{encoder}-{sid}.log",
    benchmark:
        "results/benchmarks/build_sids/{dataset}-{encoder}-{sid}.tsv"
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/build_sids.py"
