from genrec.llm.pretrain import based_on
from genrec.logs import log_to_file
from genrec.settings import SFTSettings
from genrec.sft import run_sft
from genrec.training.launch import run_stage

log_to_file(snakemake.log[0])
run_stage(
    run_sft,
    based_on(SFTSettings.from_json(snakemake.params.settings), snakemake.input.get("pretrained")),
    gpus=snakemake.resources.gpu,
    train_csv=snakemake.input.train,
    valid_csv=snakemake.input.valid,
    item_json=snakemake.input.item_json,
    sid_index=snakemake.input.sids,
    out_dir=snakemake.output.checkpoint,
    log_json=snakemake.output.train_log,
    loss_png=snakemake.output.loss_plot,
    threads=snakemake.threads,
)
