from genrec.baselines.seqrec import train_baseline
from genrec.logs import log_to_file
from genrec.settings import SeqRecSettings

log_to_file(snakemake.log[0])
train_baseline(
    snakemake.wildcards.seqrec,
    SeqRecSettings.from_json(snakemake.params.settings),
    train_csv=snakemake.input.train,
    valid_csv=snakemake.input.valid,
    item_json=snakemake.input.item_json,
    scorer_dir=snakemake.output.scorer,
    threads=snakemake.threads,
)
