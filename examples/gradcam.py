"""Grad-CAM on real chest X-rays: train a small model, explain it, check it.

Usage::

    python examples/gradcam.py [DATA_DIR] [--n-patients N]

DATA_DIR is the Kermany ``chest_xray`` folder (default: ``../shared/data/
chest_xray`` beside the repository). A small cnn4 is trained on a
patient-grouped subset of ``train`` (about 3 minutes on 2 CPU cores), then
explained on held-out patients. Saves ``gradcam_grid.png`` in ``--out``
(default ``out/gradcam/``; ``--out docs/images`` refreshes the guide's copy).
For research and education; not a medical device.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from cxrkit import PneumoniaClassifier, load_image_folder, patient_groups
from cxrkit.explain import faithfulness_score, grad_cam, occlusion
from cxrkit.plot import plot_explanations

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser()
parser.add_argument("data", nargs="?", default=ROOT.parent / "shared/data/chest_xray")
parser.add_argument("--n-patients", type=int, default=500)
parser.add_argument("--out", type=Path, default=Path("out/gradcam"))
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

# --8<-- [start:train]
X, y = load_image_folder(Path(args.data) / "train")
groups = patient_groups(X)
split = GroupShuffleSplit(1, train_size=args.n_patients, test_size=12, random_state=0)
train, test = next(split.split(X, y, groups))  # no patient on both sides
start = time.perf_counter()
clf = PneumoniaClassifier(
    model="cnn4", image_size=96, class_weight="balanced", max_epochs=6, random_state=0
)
clf.fit(X[train], y[train])
# --8<-- [end:train]
print(f"trained on {len(train)} images in {time.perf_counter() - start:.0f} s")

# --8<-- [start:explain]
X_test, y_test = X[test], y[test]
heatmaps = grad_cam(clf, X_test)  # (n, 96, 96) in [0, 1], predicted class
print("heatmaps:", heatmaps.shape, heatmaps.dtype)
# --8<-- [end:explain]

# --8<-- [start:faithfulness]
random_maps = np.random.default_rng(0).random(heatmaps.shape)
for name, maps in [
    ("grad_cam", heatmaps),
    ("occlusion", occlusion(clf, X_test, window=16)),
    ("random", random_maps),
]:
    auc = faithfulness_score(clf, X_test, maps, metric="deletion", n_steps=5)
    print(f"deletion AUC {name:>10}: {auc.mean():.3f}  (lower is more faithful)")
# --8<-- [end:faithfulness]

# --8<-- [start:plot]
pick = np.r_[
    np.flatnonzero(y_test == "NORMAL")[:4], np.flatnonzero(y_test != "NORMAL")[:4]
]
fig = plot_explanations(clf, X_test[pick], y_test[pick], ncols=4)
fig.savefig(args.out / "gradcam_grid.png", dpi=100)
# --8<-- [end:plot]
