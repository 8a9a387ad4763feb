from genrec.llm.pretrain import pretrain_stage
from genrec.logs import log_to_file
from genrec.settings import PretrainSettings
from genrec.training.launch import run_stage

log_to_file(snakemake.log[0])
run_stage(
    pretrain_stage,
    PretrainSettings.from_json(snakemake.params.settings),
    gpus=snakemake.resources.gpu,
    texts=snakemake.input.texts,
    out_dir=snakemake.output.checkpoint,
    log_json=snakemake.output.train_log,
    loss_png=snakemake.output.loss_plot,
    metrics_json=snakemake.output.metrics,
    threads=snakemake.threads,
)
