"""Heatmaps on real chest X-rays: train with the recipe, explain, check.

Usage::

    python examples/gradcam.py [DATA_DIR] [--n-patients N] [--epochs E]
    python examples/gradcam.py --model model.cxr   # explain a saved model

DATA_DIR is the Kermany ``chest_xray`` folder (default: ``../shared/data/
chest_xray`` beside the repository). Without ``--model``, a ResNet-18 is
trained with the ``"cpu"`` recipe's settings (112 px, ``augment="blur"``,
balanced classes, one-cycle schedule), for fewer epochs, on a
patient-grouped subset of ``train``. The 16 images of ``val`` (patients
not in ``train``) are explained with ``cxrkit.explain.explain``'s
recommended method, with input x gradient and with Grad-CAM. Saves
``explain_grid.png``, ``input_x_gradient_grid.png`` and
``gradcam_grid.png`` in ``--out`` (default ``out/gradcam/``; ``--out
docs/images`` refreshes the guide's copies). For research and education;
not a medical device.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from cxrkit import PneumoniaClassifier, load_image_folder, patient_groups
from cxrkit.explain import (
    DEFAULT_METHOD,
    explain,
    faithfulness_score,
    grad_cam,
    input_x_gradient,
)
from cxrkit.plot import plot_explanations
from cxrkit.recipes import make_classifier

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser()
parser.add_argument("data", nargs="?", default=ROOT.parent / "shared/data/chest_xray")
parser.add_argument("--n-patients", type=int, default=500)
parser.add_argument("--out", type=Path, default=Path("out/gradcam"))
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--model", default=None, help="explain this saved model")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

# --8<-- [start:train]
if args.model is None:
    X, y = load_image_folder(Path(args.data) / "train")
    split = GroupShuffleSplit(1, train_size=args.n_patients, random_state=0)
    train, _ = next(split.split(X, y, patient_groups(X)))
    start = time.perf_counter()
    clf = make_classifier("cpu", max_epochs=args.epochs, random_state=0)
    clf.fit(X[train], y[train])
    print(f"trained on {len(train)} images in {time.perf_counter() - start:.0f} s")
else:
    clf = PneumoniaClassifier.load(args.model)
# --8<-- [end:train]

# --8<-- [start:explain]
X_test, y_test = load_image_folder(Path(args.data) / "val")
heatmaps = explain(clf, X_test)  # the recommended method, predicted class
print(f"{DEFAULT_METHOD}:", heatmaps.shape, heatmaps.dtype)
# --8<-- [end:explain]

# --8<-- [start:faithfulness]
maps = {  # each method once: the grids below draw these
    DEFAULT_METHOD: heatmaps,
    "input_x_gradient": input_x_gradient(clf, X_test),
    "grad_cam": grad_cam(clf, X_test),
}
random_maps = np.random.default_rng(0).random(heatmaps.shape)
for name, m in [*maps.items(), ("random", random_maps)]:
    auc = faithfulness_score(clf, X_test, m, metric="deletion", n_steps=5)
    print(f"deletion AUC {name:>12}: {auc.mean():.3f}  (lower is more faithful)")
# --8<-- [end:faithfulness]

# --8<-- [start:plot]
pick = np.r_[
    np.flatnonzero(y_test == "NORMAL")[:4], np.flatnonzero(y_test != "NORMAL")[:4]
]
for name, file in [
    (DEFAULT_METHOD, "explain_grid"),
    ("input_x_gradient", "input_x_gradient_grid"),
    ("grad_cam", "gradcam_grid"),
]:
    fig = plot_explanations(
        clf, X_test[pick], y_test[pick], heatmaps=maps[name][pick], ncols=4
    )
    fig.savefig(args.out / f"{file}.png", dpi=100)
# --8<-- [end:plot]
print("accuracy on val:", (clf.predict(X_test) == y_test).mean())
