from genrec.logs import log_to_file
from genrec.report.llm import plot_llm

log_to_file(snakemake.log[0])
plot_llm(snakemake.input.summary, paths=dict(snakemake.output.items()))
