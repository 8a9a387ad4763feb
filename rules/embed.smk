rule embed_items:
    input:
        item_json="results/{dataset}/data/item.json",
    output:
        "results/{dataset}/emb/{dataset}.emb-{encoder}-td.npy",
    params:
        settings=settings_of("encoders", "encoder"),
    threads: 2
    resources:
        gpu=0,
    log:
        "results/logs/embed_items/{dataset}-{encoder}.log",
    benchmark:
        "results/benchmarks/embed_items/{dataset}-{encoder}.tsv"
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/embed_items.py"
