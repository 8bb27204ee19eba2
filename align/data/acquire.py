"""Stage `acquire`: a dataset's raw images into `<data.root>/raw/<dataset>/<domain>/<class>/`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from align.config import Params
from align.data.download import Downloads
from align.data.registry import DATASETS
from align.stages import raw_dir

log = logging.getLogger(__name__)


def acquire_dataset(params: Params, dataset: str, refresh: bool = False) -> Path:
    """Download, extract or generate `dataset`; returns its raw folder.

    The source writes into a hidden temporary folder that is renamed into place only when it is
    complete, so an interrupted run never leaves a raw folder that looks finished. `refresh`
    first deletes the dataset's downloads pinned in the lock file, and their entries there.
    """
    source = DATASETS.get(dataset)(params.dataset_config(dataset))
    final = raw_dir(params, dataset)
    staging = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    downloads = Downloads(params.data.root, params.data.download)
    if refresh:
        downloads.refresh(dataset)
    source.acquire(staging, downloads)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    log.info("acquired %s into %s", dataset, final)
    return final
