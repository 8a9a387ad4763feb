from genrec.logs import log_to_file
from genrec.report.llm import llm_summary

log_to_file(snakemake.log[0])
llm_summary(snakemake.params.cells, snakemake.output.summary)
