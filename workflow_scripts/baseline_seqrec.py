from genrec.baselines.seqrec import score_baseline
from genrec.logs import log_to_file

log_to_file(snakemake.log[0])
score_baseline(
    scorer_dir=snakemake.input.scorer,
    split_csv=snakemake.input.split,
    item_json=snakemake.input.item_json,
    results_json=snakemake.output.results,
    metrics_json=snakemake.output.metrics,
    threads=snakemake.threads,
    bootstrap=snakemake.params.protocol["bootstrap"],
)
