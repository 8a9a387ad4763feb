"""The data stage: any source to one MiniOneRec-format dataset directory."""

from __future__ import annotations

import logging

import pandas as pd

from genrec.data.format import data_quality, dataset_dir, write_dataset
from genrec.logs import log_settings
from genrec.settings import AmazonSettings, DatasetSettings, ImportSettings, SyntheticSettings

log = logging.getLogger(__name__)


def prepare_data(settings: DatasetSettings, **files: str) -> None:
    """Build the dataset named by ``settings.source`` and write its directory atomically.

    Args:
        settings: the dataset entry.
        files: the output paths, by the names of :data:`~genrec.data.format.DATASET_FILES` (the rule's
            outputs): ``train/valid/test.csv``, ``item.json``, ``info.txt``, ``data_stats.json`` and
            ``source.index.json`` (an imported directory's own SIDs, ``{}`` when it has none), all in
            one directory.
    """
    out_dir = dataset_dir(files)
    log_settings(log, "prepare_data", settings)
    extra: dict[str, object] = {"source.index.json": {}}
    if isinstance(settings, SyntheticSettings):
        from genrec.data.synthetic import prepare_synthetic

        items, splits, stats = prepare_synthetic(settings)
    elif isinstance(settings, AmazonSettings):
        from genrec.data.amazon import prepare_amazon

        items, splits, stats = prepare_amazon(settings)
    elif isinstance(settings, ImportSettings):
        from genrec.data.importer import import_minionerec

        items, splits, stats = import_minionerec(settings)
        source_index = stats.pop("source_index")
        if source_index is not None:
            extra["source.index.json"] = source_index
    else:  # pragma: no cover - dataset_settings() only builds the three kinds
        raise TypeError(f"unknown dataset settings {type(settings).__name__}")
    if settings.train_fraction < 1:
        splits = {
            **splits,
            "train": subsample_users(splits["train"], settings.train_fraction, settings.train_fraction_seed),
        }
    quality = data_quality(items, splits)
    if quality["test_duplicate_rows"]:
        raise ValueError(
            f"the test split has {quality['test_duplicate_rows']} exact duplicate rows (same user, history and "
            f"target): each would count twice in every metric; remove them from the source"
        )
    for key, count in quality.items():
        if count:
            log.warning("data quality: %s = %d (see data_stats.json)", key, count)
    stats = {
        **stats,
        "quality": quality,
        **{f"{k}_rows": len(v) for k, v in splits.items()},
        "items": len(items),
        "train_fraction": settings.train_fraction,
        "train_users": int(splits["train"]["user_id"].nunique()),
    }
    write_dataset(out_dir, items, splits, extra={"data_stats.json": stats, **extra})
    log.info("dataset stats: %s", {k: v for k, v in stats.items() if not isinstance(v, dict)})


def subsample_users(train: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Keep all training rows of a seeded random ``fraction`` of the training users (at least one).

    >>> df = pd.DataFrame({"user_id": ["a", "a", "b", "c", "d"], "item_id": [1, 2, 3, 4, 5]})
    >>> len(subsample_users(df, 0.5, seed=0)["user_id"].unique())
    2
    """
    import numpy as np

    users = np.array(sorted(train["user_id"].unique()))
    keep = np.random.default_rng(seed).choice(users, size=max(1, round(fraction * len(users))), replace=False)
    return train[train["user_id"].isin(set(keep))].reset_index(drop=True)


def dataset_sources(settings: DatasetSettings) -> list[str]:
    """The files a dataset is built from (none for a synthetic one): the raw Amazon files, or the files
    of a MiniOneRec directory. The workflow declares them as inputs, so editing one reruns the dataset.
    """
    if isinstance(settings, AmazonSettings):
        return [settings.reviews, settings.meta]
    if isinstance(settings, ImportSettings):
        from genrec.data.importer import source_files

        return [str(p) for p in source_files(settings.path).values()]
    return []
