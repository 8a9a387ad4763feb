from genrec.baselines.popularity import popularity
from genrec.logs import log_to_file
from genrec.settings import PopularitySettings

log_to_file(snakemake.log[0])
popularity(
    PopularitySettings.from_json(snakemake.params.settings),
    train_csv=snakemake.input.train,
    split_csv=snakemake.input.split,
    item_json=snakemake.input.item_json,
    results_json=snakemake.output.results,
    metrics_json=snakemake.output.metrics,
    bootstrap=snakemake.params.protocol["bootstrap"],
)
