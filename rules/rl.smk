rule rl:
    input:
        checkpoint=SFT_DIR + "/final_checkpoint",
    output:
        policy=RUN_DIR + "/policy.json",
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
