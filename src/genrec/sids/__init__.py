"""Item text to semantic IDs: rules ``embed_items`` (:mod:`.embed`) and ``build_sids`` (:mod:`.build`).

:mod:`.format` is the one module that formats, parses, loads and checks SIDs and ``index.json``
files; :mod:`.rqvae` is the RQ-VAE model of the ``rqvae`` method.
"""
