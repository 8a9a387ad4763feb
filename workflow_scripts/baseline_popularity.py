from genrec.baselines import popularity
from genrec.logs import log_to_file
from genrec.settings import PopularitySettings

log_to_file(snakemake.log[0])
popularity(
    PopularitySettings.from_json(snakemake.params.settings),
    data_dir=snakemake.input.item_json.rsplit("/", 1)[0],
    split="test",
    results_json=snakemake.output.results,
    metrics_json=snakemake.output.metrics,
)
