import json

from genrec.data.prepare import prepare_data
from genrec.logs import log_to_file
from genrec.settings import dataset_settings

log_to_file(snakemake.log[0])
prepare_data(dataset_settings(json.loads(snakemake.params.settings)), **dict(snakemake.output.items()))
