# The general LLM fine-tuning track (genrec.llm): instruction data -> data scales -> chat SFT per
# method -> greedy answers scored by ROUGE/BLEU -> results/llm/results_summary.csv and its plots.
# Also the reward model (TRL's RewardTrainer) and continued pretraining, which either track's SFT
# may start from (`pretrain:` in sft_variants / llm_variants / reward_variants).


rule llm_data:
    input:
        unpack(get_llm_data_sources),
    output:
        train="results/llm/{llm_data}/data/train.jsonl",
        valid="results/llm/{llm_data}/data/valid.jsonl",
        test="results/llm/{llm_data}/data/test.jsonl",
        stats="results/llm/{llm_data}/data/stats.json",
    log:
        "results/logs/llm_data/{llm_data}.log",
    conda:
        "../envs/genrec.yaml"
    params:
        settings=settings_of("llm_data", "llm_data"),
    script:
        "../workflow_scripts/llm_data.py"


rule llm_scale:
    input:
        train="results/llm/{llm_data}/data/train.jsonl",
    output:
        train="results/llm/{llm_data}/data/scale-{scale}.jsonl",
    log:
        "results/logs/llm_scale/{llm_data}-{scale}.log",
    conda:
        "../envs/genrec.yaml"
    params:
        seed=lambda wc: LLMDataSettings.from_dict(config["llm_data"][wc.llm_data]).seed,
    script:
        "../workflow_scripts/llm_scale.py"


rule llm_sft:
    input:
        unpack(get_pretrained("llm_variants", "llm_method")),
        train="results/llm/{llm_data}/data/scale-{scale}.jsonl",
        valid="results/llm/{llm_data}/data/valid.jsonl",
    output:
        checkpoint=directory("results/llm/{llm_data}/runs/{llm_model}/{llm_method}/scale-{scale}/final_checkpoint"),
        train_log="results/llm/{llm_data}/runs/{llm_model}/{llm_method}/scale-{scale}/train_log.json",
        loss_plot="results/llm/{llm_data}/runs/{llm_model}/{llm_method}/scale-{scale}/train_loss.png",
    log:
        "results/logs/llm_sft/{llm_data}/{llm_model}-{llm_method}-{scale}.log",
    benchmark:
        "results/benchmarks/llm_sft/{llm_data}/{llm_model}-{llm_method}-{scale}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
    params:
        settings=lambda wc: llm_variant_json(config, wc.llm_method, wc.llm_model),
        model=lambda wc: named_model_source(config, wc.llm_model),
    script:
        "../workflow_scripts/llm_sft.py"


rule llm_eval:
    input:
        checkpoint="results/llm/{llm_data}/runs/{llm_model}/{llm_method}/scale-{scale}/final_checkpoint",
        train_log="results/llm/{llm_data}/runs/{llm_model}/{llm_method}/scale-{scale}/train_log.json",
        test="results/llm/{llm_data}/data/test.jsonl",
    output:
        metrics="results/llm/{llm_data}/runs/{llm_model}/{llm_method}/scale-{scale}/metrics.json",
        answers="results/llm/{llm_data}/runs/{llm_model}/{llm_method}/scale-{scale}/answers.json",
    log:
        "results/logs/llm_eval/{llm_data}/{llm_model}-{llm_method}-{scale}.log",
    benchmark:
        "results/benchmarks/llm_eval/{llm_data}/{llm_model}-{llm_method}-{scale}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        settings=settings_of("llm_eval"),
    script:
        "../workflow_scripts/llm_eval.py"


rule llm_summary:
    input:
        [c["metrics"] for c in LLM_SUMMARY_CELLS],
    output:
        summary=report("results/llm/results_summary.csv", caption="../report/llm_summary.rst", category="LLM track"),
    log:
        "results/logs/llm_summary.log",
    conda:
        "../envs/genrec.yaml"
    params:
        cells=LLM_SUMMARY_CELLS,
    script:
        "../workflow_scripts/llm_summary.py"


rule llm_plots:
    input:
        summary="results/llm/results_summary.csv",
    output:
        **{
            name: report(f"results/llm/plots/{name}.png", caption=f"../report/{name}.rst", category="LLM track")
            for name in LLM_PLOTS
        },
    log:
        "results/logs/llm_plots.log",
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/llm_plots.py"


rule pretrain:
    input:
        unpack(get_pretrain_texts),
    output:
        checkpoint=directory("results/pretrain/{pretrain}/final_checkpoint"),
        train_log="results/pretrain/{pretrain}/train_log.json",
        loss_plot="results/pretrain/{pretrain}/train_loss.png",
        metrics=report(
            "results/pretrain/{pretrain}/metrics.json",
            caption="../report/pretrain.rst",
            category="LLM track",
        ),
    log:
        "results/logs/pretrain/{pretrain}.log",
    benchmark:
        "results/benchmarks/pretrain/{pretrain}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
    params:
        settings=settings_of("pretrain_variants", "pretrain"),
        model=model_of("pretrain_variants", "pretrain"),
    script:
        "../workflow_scripts/pretrain.py"


rule reward_model:
    input:
        unpack(get_pretrained("reward_variants", "reward")),
        unpack(get_reward_pairs),
    output:
        checkpoint=directory("results/llm/reward/{reward}/final_checkpoint"),
        train_log="results/llm/reward/{reward}/train_log.json",
        loss_plot="results/llm/reward/{reward}/train_loss.png",
        metrics=report(
            "results/llm/reward/{reward}/metrics.json",
            caption="../report/reward_model.rst",
            category="LLM track",
        ),
    log:
        "results/logs/reward_model/{reward}.log",
    benchmark:
        "results/benchmarks/reward_model/{reward}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
    params:
        settings=settings_of("reward_variants", "reward"),
        model=model_of("reward_variants", "reward"),
    script:
        "../workflow_scripts/reward_model.py"
