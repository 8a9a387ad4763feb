from genrec.logs import log_to_file
from genrec.rl.run import run_rl
from genrec.settings import RLSettings
from genrec.training.launch import run_stage

log_to_file(snakemake.log[0])
run_stage(
    run_rl,
    RLSettings.from_json(snakemake.params.settings),
    gpus=snakemake.resources.gpu,
    sft_checkpoint=snakemake.input.checkpoint,
    policy_json=snakemake.output.policy,
    train_csv=snakemake.input.get("train"),
    sid_index=snakemake.input.get("sids"),
    out_dir=snakemake.output.get("checkpoint"),
    log_json=snakemake.output.get("rl_log"),
    plot_png=snakemake.output.get("plot"),
    scorer_dir=snakemake.input.get("scorer"),
    reward_model_dir=snakemake.input.get("reward_model"),
    threads=snakemake.threads,
)
