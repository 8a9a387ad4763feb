from genrec.llm.pretrain import based_on
from genrec.llm.reward import reward_stage
from genrec.logs import log_to_file
from genrec.settings import RewardSettings

log_to_file(snakemake.log[0])
reward_stage(
    based_on(RewardSettings.from_json(snakemake.params.settings), snakemake.input.get("pretrained")),
    qa=snakemake.input.get("qa"),
    pairs=snakemake.input.get("pairs"),
    out_dir=snakemake.output.checkpoint,
    log_json=snakemake.output.train_log,
    loss_png=snakemake.output.loss_plot,
    metrics_json=snakemake.output.metrics,
    threads=snakemake.threads,
)
