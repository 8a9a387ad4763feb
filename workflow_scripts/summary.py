from genrec.logs import log_to_file
from genrec.report.summary import compare, summarize

log_to_file(snakemake.log[0])
summarize(
    snakemake.params.cells,
    snakemake.params.baselines,
    out_csv=snakemake.output.summary,
    bootstrap=snakemake.params.bootstrap,
)
compare(
    snakemake.params.cells,
    snakemake.params.baselines,
    out_csv=snakemake.output.comparisons,
    bootstrap=snakemake.params.bootstrap,
)
