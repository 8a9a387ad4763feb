from genrec.llm.pretrain import based_on
from genrec.llm.sft import run_chat_sft
from genrec.logs import log_to_file
from genrec.settings import LLMVariantSettings
from genrec.training.launch import run_stage

log_to_file(snakemake.log[0])
run_stage(
    run_chat_sft,
    based_on(LLMVariantSettings.from_json(snakemake.params.settings), snakemake.input.get("pretrained")),
    gpus=snakemake.resources.gpu,
    train_data=snakemake.input.train,
    valid_data=snakemake.input.valid,
    out_dir=snakemake.output.checkpoint,
    log_json=snakemake.output.train_log,
    loss_png=snakemake.output.loss_plot,
    threads=snakemake.threads,
)
