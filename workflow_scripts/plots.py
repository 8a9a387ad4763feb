from genrec.logs import log_to_file
from genrec.plots import plot_all

log_to_file(snakemake.log[0])
plot_all(snakemake.input.summary, snakemake.input.comparisons, out_dir=snakemake.output[0].rsplit("/", 1)[0])
