rule embed_items:
    input:
        item_json="results/{dataset}/data/item.json",
    output:
        "results/{dataset}/emb/{dataset}.emb-{encoder}-td.npy",
    log:
        "results/logs/embed_items/{dataset}-{encoder}.log",
    benchmark:
        "results/benchmarks/embed_items/{dataset}-{encoder}.tsv"
    conda:
        "../envs/genrec.yaml"
    threads: 2
    resources:
        gpu=0,
    params:
        settings=settings_of("encoders", "encoder"),
        model=model_of("encoders", "encoder"),
    script:
        "../workflow_scripts/embed_items.py"
