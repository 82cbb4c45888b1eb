"""Hyperparameter search on a Dask cluster through joblib's ``"dask"`` backend.

A 2-worker ``LocalCluster`` of processes trains on image paths (real
radiographs) and must give the scores of the same search run locally: each
worker decodes the files itself, into its own process-wide image cache.
"""

from __future__ import annotations

import logging

import joblib
import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from cxrkit import PneumoniaClassifier, load_image_folder

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def dask_client():
    """Two worker processes (one thread each) on free local ports; closed after."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,  # any free port: parallel CI jobs do not collide
        dashboard_address=None,  # no web server, no port 8787
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster, timeout="60s")
    try:
        client.wait_for_workers(2, timeout=120)
        yield client
    finally:
        client.close()
        cluster.close(timeout=30)


@pytest.fixture(scope="module")
def paths_and_labels(kermany_dir):
    """12 NORMAL and 12 PNEUMONIA real radiographs, as absolute paths."""
    X, y = load_image_folder(kermany_dir.resolve() / "train")
    pick = np.concatenate([np.flatnonzero(y == c)[:12] for c in np.unique(y)])
    return X[pick], y[pick]


def _search() -> GridSearchCV:
    clf = PneumoniaClassifier(
        model="simple_cnn",
        image_size=32,
        max_epochs=1,
        batch_size=8,
        augment=None,
        validation_fraction=None,
        random_state=0,
    )
    return GridSearchCV(
        clf,
        {"lr": [1e-3, 1e-2]},
        scoring="roc_auc",
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
        n_jobs=-1,
        refit=False,
    )


def _cached_images() -> int:
    from cxrkit.images._cache import image_cache

    return len(image_cache)


def test_grid_search_on_dask_gives_the_local_scores(dask_client, paths_and_labels):
    X, y = paths_and_labels
    assert sum(dask_client.run(_cached_images).values()) == 0

    with joblib.parallel_backend("dask"):
        on_dask = _search().fit(X, y)
    # Workers run one torch thread each (Dask sets OMP_ and MKL_NUM_THREADS=1), so
    # the local search uses one too: the same arithmetic, the same scores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = _search().set_params(n_jobs=1).fit(X, y)
    finally:
        torch.set_num_threads(threads)

    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        np.testing.assert_array_equal(on_dask.cv_results_[key], local.cv_results_[key])
    assert np.all(np.isfinite(local.cv_results_["mean_test_score"]))
    assert list(on_dask.cv_results_["params"]) == list(local.cv_results_["params"])
    # The fits ran on the workers, which decoded the paths into their own caches.
    cached = dask_client.run(_cached_images)
    assert len(cached) == 2 and sum(cached.values()) > 0
    assert max(cached.values()) <= len(X)
