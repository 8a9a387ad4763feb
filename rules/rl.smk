rule rl:
    input:
        checkpoint="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/final_checkpoint",
    output:
        policy="results/{dataset}/runs/{encoder}-{sid}/sft-{sft}/rl-{rl}/policy.json",
    params:
        settings=settings_of("rl_variants", "rl"),
    threads: 2
    resources:
        gpu=1,
    log:
        "results/logs/rl/{dataset}/{encoder}-{sid}-{sft}-{rl}.log",
    conda:
        "../envs/genrec.yaml"
    script:
        "../workflow_scripts/rl.py"
