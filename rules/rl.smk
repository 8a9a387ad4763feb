# The RL stage. rl_none passes the SFT checkpoint on (policy.json names it); rl_grpo trains with
# GRPO and writes its own final_checkpoint. Which rule runs follows each variant's method.


rule rl_none:
    input:
        checkpoint="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/final_checkpoint",
    output:
        policy="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/rl-{rl}/policy.json",
    log:
        "results/logs/rl/{dataset}/{encoder}-{sid}-{sft}-{rl}.log",
    wildcard_constraints:
        rl=rl_variants_of("none"),
    conda:
        "../envs/genrec.yaml"
    resources:
        gpu=0,  # writes policy.json only
    params:
        settings=settings_of("rl_variants", "rl"),
    script:
        "../workflow_scripts/rl.py"


rule rl_grpo:
    input:
        unpack(get_grpo_scorer),
        unpack(get_grpo_reward_model),
        checkpoint="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/final_checkpoint",
        train="results/{dataset}/data/train.csv",
        sids="results/{dataset}/sid/{encoder}/{sid}/{dataset}.index.json",
    output:
        policy="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/rl-{rl}/policy.json",
        checkpoint=directory("results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/rl-{rl}/final_checkpoint"),
        rl_log="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/rl-{rl}/rl_log.json",
        plot="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/rl-{rl}/rl_log.png",
    log:
        "results/logs/rl/{dataset}/{encoder}-{sid}-{sft}-{rl}.log",
    benchmark:
        "results/benchmarks/rl/{dataset}/{encoder}-{sid}-{sft}-{rl}.tsv"
    wildcard_constraints:
        rl=rl_variants_of("grpo"),
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
    params:
        settings=settings_of("rl_variants", "rl"),
    script:
        "../workflow_scripts/rl.py"
