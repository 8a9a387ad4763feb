from genrec.logs import log_to_file
from genrec.seqrec import run_baseline
from genrec.settings import SeqRecSettings

log_to_file(snakemake.log[0])
run_baseline(
    snakemake.wildcards.seqrec,
    SeqRecSettings.from_json(snakemake.params.settings),
    data_dir=snakemake.input.item_json.rsplit("/", 1)[0],
    results_json=snakemake.output.results,
    metrics_json=snakemake.output.metrics,
    scorer_dir=snakemake.output.scorer,
    threads=snakemake.threads,
)
