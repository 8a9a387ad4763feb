from genrec.logs import log_to_file
from genrec.summary import summarize

log_to_file(snakemake.log[0])
summarize(snakemake.params.cells, snakemake.params.baselines, out_csv=snakemake.output[0])
