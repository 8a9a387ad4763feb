rule sft:
    input:
        unpack(get_pretrained("sft_variants", "sft")),
        train="results/{dataset}/data/train.csv",
        valid="results/{dataset}/data/valid.csv",
        item_json="results/{dataset}/data/item.json",
        sids="results/{dataset}/sid/{encoder}/{sid}/{dataset}.index.json",
    output:
        checkpoint=directory("results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/final_checkpoint"),
        train_log="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/train_log.json",
        loss_plot="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/train_loss.png",
    log:
        "results/logs/sft/{dataset}/{encoder}-{sid}-{sft}.log",
    benchmark:
        "results/benchmarks/sft/{dataset}/{encoder}-{sid}-{sft}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        # above 1 (e.g. --set-resources sft:gpu=4 in a profile), training runs under
        # accelerate launch with DeepSpeed ZeRO-2 (genrec.training.launch)
        gpu=1,
        mem_mb=16000,
    params:
        settings=settings_of("sft_variants", "sft"),
        model=model_of("sft_variants", "sft"),
    script:
        "../workflow_scripts/sft.py"
