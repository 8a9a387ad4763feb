from genrec.logs import log_to_file
from genrec.report.plots import plot_all

log_to_file(snakemake.log[0])
plot_all(snakemake.input.summary, snakemake.input.comparisons, paths=dict(snakemake.output.items()))
