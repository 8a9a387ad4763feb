from genrec.evaluate import evaluate
from genrec.logs import log_to_file
from genrec.settings import EvalSettings

log_to_file(snakemake.log[0])
evaluate(
    EvalSettings.from_json(snakemake.params.settings),
    policy_json=snakemake.input.policy,
    split_csv=snakemake.input.split,
    sid_index=snakemake.input.sids,
    results_json=snakemake.output.results,
    metrics_json=snakemake.output.metrics,
    threads=snakemake.threads,
)
