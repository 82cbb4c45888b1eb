"""Datasets: a real sample in the package, synthetic images, public sets on disk.

* [`load_sample_cxr`][cxrkit.datasets.load_sample_cxr]: 600 real chest
  X-rays of the Kermany et al. (2018) dataset (CC BY 4.0), shipped in
  ``cxrkit/datasets/sample/``: nothing to download.
* [`make_synthetic_cxr`][cxrkit.datasets.make_synthetic_cxr]: chest-like
  images with known lesion masks, for tests and checking explanations.
* [`load_pneumoniamnist`][cxrkit.datasets.load_pneumoniamnist] and the
  fetchers [`fetch_kermany`][cxrkit.datasets.fetch_kermany] and
  [`fetch_pneumoniamnist`][cxrkit.datasets.fetch_pneumoniamnist], which
  download when a network is reachable and say where to get the files by
  hand when it is not.

Modules: ``_sample`` (the shipped sample), ``_synthetic`` (synthetic
images), ``_fetch`` (downloads and files on disk).
"""

from cxrkit.datasets._fetch import (
    fetch_kermany,
    fetch_pneumoniamnist,
    get_data_home,
    load_pneumoniamnist,
)
from cxrkit.datasets._sample import SAMPLE_CITATION, load_sample_cxr
from cxrkit.datasets._synthetic import make_synthetic_cxr

__all__ = [
    "SAMPLE_CITATION",
    "fetch_kermany",
    "fetch_pneumoniamnist",
    "get_data_home",
    "load_pneumoniamnist",
    "load_sample_cxr",
    "make_synthetic_cxr",
]
