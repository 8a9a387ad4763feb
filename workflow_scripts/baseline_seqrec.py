from genrec.baselines.seqrec import run_baseline
from genrec.logs import log_to_file
from genrec.settings import SeqRecSettings

log_to_file(snakemake.log[0])
run_baseline(
    snakemake.wildcards.seqrec,
    SeqRecSettings.from_json(snakemake.params.settings),
    train_csv=snakemake.input.train,
    valid_csv=snakemake.input.valid,
    split_csv=snakemake.input.split,
    item_json=snakemake.input.item_json,
    results_json=snakemake.output.results,
    metrics_json=snakemake.output.metrics,
    scorer_dir=snakemake.output.scorer,
    threads=snakemake.threads,
    bootstrap=snakemake.params.protocol["bootstrap"],
)
