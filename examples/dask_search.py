"""Hyperparameter search on a Dask cluster: GridSearchCV through joblib's backend.

Usage::

    pip install "cxrkit[distributed]"
    python examples/dask_search.py [DATA_DIR] [--workers 2] [--image-size 64]

DATA_DIR is a class-per-subfolder folder (e.g. ``../shared/data/chest_xray/train``;
default: synthetic images written to a temporary folder). The search runs on a
``LocalCluster`` of worker processes on this machine; the scaling guide shows
the same search on Slurm, PBS and Kubernetes clusters, where only the cluster
object changes. For research and education; not a medical device.
"""

import argparse
import tempfile
from pathlib import Path

# --8<-- [start:search]
import joblib
from dask.distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV, GroupKFold

from cxrkit import PneumoniaClassifier, load_image_folder, patient_groups

# --8<-- [end:search]


def synthetic_folder(n: int = 120) -> Path:
    """A class-per-subfolder tree of synthetic PNGs (when no DATA_DIR is given)."""
    from PIL import Image

    from cxrkit.datasets import make_synthetic_cxr

    root = Path(tempfile.mkdtemp(prefix="cxrkit_dask_"))
    X, y, _ = make_synthetic_cxr(n, image_size=64, random_state=0)
    for i, (image, label) in enumerate(zip(X, y)):
        (root / label).mkdir(exist_ok=True)
        # Kermany-style names: patient_groups reads one patient per image
        name = f"IM-{i:04d}-0001.png" if label == "NORMAL" else f"person{i}_virus_1.png"
        Image.fromarray(image).save(root / label / name)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, help="class-per-subfolder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    data_dir = args.data or synthetic_folder()

    # --8<-- [start:run]
    # Absolute paths: every worker opens the files itself.
    X, y = load_image_folder(Path(data_dir).resolve())
    clf = PneumoniaClassifier(
        model="cnn4",
        image_size=args.image_size,
        max_epochs=args.epochs,
        class_weight="balanced",
        random_state=0,
    )
    search = GridSearchCV(
        clf,
        {"lr": [1e-3, 3e-4], "augment": ["light", "default"]},
        scoring="roc_auc",
        cv=GroupKFold(3),  # no patient in two folds
        n_jobs=-1,  # one fit per free worker thread
    )
    with LocalCluster(n_workers=args.workers, threads_per_worker=1) as cluster:
        with Client(cluster) as client:
            print("dashboard:", client.dashboard_link)
            with joblib.parallel_backend("dask"):
                search.fit(X, y, groups=patient_groups(X))
    # --8<-- [end:run]
    scores = search.cv_results_["mean_test_score"]
    for params, score in zip(search.cv_results_["params"], scores):
        print(f"{params}: mean ROC AUC {score:.3f}")
    print("best:", search.best_params_, f"({max(scores):.3f})")


if __name__ == "__main__":
    main()
