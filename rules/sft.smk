rule sft:
    input:
        train=DATA + "/train.csv",
        valid=DATA + "/valid.csv",
        item_json=DATA + "/item.json",
        sids=SID_DIR + "/{dataset}.index.json",
    output:
        checkpoint=directory(SFT_DIR + "/final_checkpoint"),
        train_log=SFT_DIR + "/train_log.json",
    params:
        settings=settings_of("sft_variants", "sft"),
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
    log:
        "results/logs/sft/{dataset}/{encoder}-{sid}-{sft}.log",
    benchmark:
        "results/benchmarks/sft/{dataset}/{encoder}-{sid}-{sft}.tsv"
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/sft.py"
