from genrec.logs import log_to_file
from genrec.settings import SIDSettings
from genrec.sid import build_sids

log_to_file(snakemake.log[0])
build_sids(
    SIDSettings.from_json(snakemake.params.settings),
    emb_npy=snakemake.input.emb,
    data_dir=snakemake.input.item_json.rsplit("/", 1)[0],
    index_json=snakemake.output.index,
    stats_json=snakemake.output.stats,
    dataset_dir=snakemake.output.dataset,
    plot_png=snakemake.output.plot,
)
