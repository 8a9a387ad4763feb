"""Datasets in MiniOneRec's format: synthetic, raw Amazon Reviews 2018, or an existing directory."""
