from genrec.logs import log_to_file
from genrec.settings import EmbedSettings
from genrec.sids.embed import embed_items

log_to_file(snakemake.log[0])
embed_items(
    EmbedSettings.from_json(snakemake.params.settings), item_json=snakemake.input.item_json, out_npy=snakemake.output[0]
)
