from genrec.config import scale_value
from genrec.llm.data import write_scale
from genrec.logs import log_to_file

log_to_file(snakemake.log[0])
scale = scale_value(snakemake.wildcards.scale)
write_scale(snakemake.input.train, scale, snakemake.params.seed, snakemake.output.train)
