from genrec.logs import log_to_file
from genrec.settings import SIDSettings
from genrec.sids.build import build_sids

log_to_file(snakemake.log[0])
build_sids(
    SIDSettings.from_json(snakemake.params.settings),
    emb_npy=snakemake.input.emb,
    item_json=snakemake.input.item_json,
    splits={"train": snakemake.input.train, "valid": snakemake.input.valid, "test": snakemake.input.test},
    index_json=snakemake.output.index,
    stats_json=snakemake.output.stats,
    dataset_dir=snakemake.output.dataset,
    plot_png=snakemake.output.plot,
    source_index=snakemake.input.get("source_index"),
)
