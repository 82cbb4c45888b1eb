"""The tutorial (docs/tutorial.md): from the downloaded Kermany folder to a
report on its test split and Grad-CAM of the errors.

Usage::

    python examples/tutorial.py                       # the tutorial's settings
    python examples/tutorial.py --data ../shared/data/chest_xray \\
        --test-dir ../shared/data/chest_xray/val --n-patients 60 --epochs 1 \\
        --image-size 64 --out out/tutorial        # small settings (the tests)

Every section between ``--8<--`` markers is one code block of the tutorial,
in the same order; the only code not shown there is the block that reads
the command-line options above, so that the test suite can run the same
code on small settings. Writes everything to ``OUT`` (default
``tutorial-output/``), never into the repository's docs.

For research and education; not a medical device.
"""

# --8<-- [start:settings]
from pathlib import Path

DATA = Path("chest_xray")  # the unpacked download: train/, test/ (and val/)
TEST_DIR = DATA / "test"  # the official test split: used once, at the end
OUT = Path("tutorial-output")  # everything the tutorial writes goes here
N_PATIENTS = 600  # patients to use from train/ (None: all 2,800 or so)
IMAGE_SIZE = 128  # pixels; the images are resized to IMAGE_SIZE x IMAGE_SIZE
EPOCHS = 8
# --8<-- [end:settings]

# Not in the tutorial: the same settings from the command line (tests).
if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--test-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--n-patients", type=int, default=N_PATIENTS)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    DATA, OUT, N_PATIENTS = args.data, args.out, args.n_patients
    TEST_DIR = args.test_dir or DATA / "test"
    IMAGE_SIZE, EPOCHS = args.image_size, args.epochs
    import matplotlib

    matplotlib.use("Agg")  # no windows: the figures are saved to OUT

# --8<-- [start:load]
import numpy as np

from cxrkit import load_image_folder, patient_groups

X, y = load_image_folder(DATA / "train")  # X: file paths, y: folder names
groups = patient_groups(X)  # the patient of each image, from its file name
for label in np.unique(y):
    n_patients = len(np.unique(groups[y == label]))
    print(f"{label}: {np.sum(y == label)} images of {n_patients} patients")
# --8<-- [end:load]

# --8<-- [start:split]
from sklearn.model_selection import GroupShuffleSplit

if N_PATIENTS is not None and N_PATIENTS < len(np.unique(groups)):
    # an integer train_size counts groups: patients, not images
    subset = GroupShuffleSplit(
        n_splits=1,
        train_size=N_PATIENTS,
        random_state=0,
    )
    keep, _ = next(subset.split(X, y, groups))
    X, y, groups = X[keep], y[keep], groups[keep]

# 80% of the patients to train on, 20% to choose the threshold on
split = GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=0)
train, valid = next(split.split(X, y, groups))
X_train, y_train = X[train], y[train]
X_valid, y_valid = X[valid], y[valid]
assert not set(groups[train]) & set(groups[valid])  # no patient on both sides
print(f"training: {len(train)} images, validation: {len(valid)} images")
# --8<-- [end:split]

# --8<-- [start:train]
import time

from cxrkit import PneumoniaClassifier

clf = PneumoniaClassifier(
    model="cnn4",  # a small CNN: trains on a laptop CPU
    image_size=IMAGE_SIZE,
    class_weight="balanced",  # about 3 pneumonia images for each normal one
    max_epochs=EPOCHS,
    verbose=2,  # a progress bar per epoch and one line per epoch
    random_state=0,
)
start = time.perf_counter()
clf.fit(X_train, y_train)
print(f"trained in {time.perf_counter() - start:.0f} s")
# --8<-- [end:train]

# --8<-- [start:threshold]
from cxrkit.metrics import select_threshold

proba_valid = clf.predict_proba(X_valid)  # columns follow clf.classes_
youden = select_threshold(y_valid, proba_valid)  # best sens. + spec.
screening = select_threshold(y_valid, proba_valid, sensitivity=0.95)
print(youden)
print(screening)
threshold = screening.threshold  # the operating threshold, fixed from here on
# the model file records the threshold and what the model was trained on
model_file = clf.save(OUT / "model.cxr", threshold=screening)
print(f"model saved to {model_file}")
# --8<-- [end:threshold]

# --8<-- [start:report]
from cxrkit.report import evaluation_report

X_test, y_test = load_image_folder(TEST_DIR)
report = evaluation_report(
    clf,
    X_test,
    y_test,
    OUT / "report",
    threshold=threshold,
    data_name=str(TEST_DIR),
)
print(report)
print(f"open {OUT / 'report' / 'report.html'} in a browser")
# --8<-- [end:report]

# --8<-- [start:heatmaps]
from cxrkit import load_images
from cxrkit.explain import DEFAULT_METHOD, explain, method_caption
from cxrkit.plot import plot_heatmap_grid

wrong = np.flatnonzero(report.y_true != report.y_pred)
# the most confident errors first: probability of the class that was given
column = {c: k for k, c in enumerate(clf.classes_)}
p_given = np.array([report.proba[i, column[report.y_pred[i]]] for i in wrong])
order = np.argsort(-p_given)[:8]
worst, p_worst = wrong[order], p_given[order]
print(f"{len(wrong)} of {len(y_test)} test images misclassified")
if len(worst):
    # the recommended method, as the report and `cxrkit explain` draw it
    heatmaps = explain(clf, X_test[worst], list(report.y_pred[worst]))
    images, _ = load_images(X_test[worst], clf.image_size)
    fig = plot_heatmap_grid(
        images,
        heatmaps,
        y_true=list(y_test[worst]),
        y_pred=list(report.y_pred[worst]),
        proba=list(p_worst),
    )
    fig.suptitle(method_caption(DEFAULT_METHOD), fontsize=8)
    fig.savefig(OUT / "heatmap_errors.png", dpi=100)
    print(f"heatmaps of the errors: {OUT / 'heatmap_errors.png'}")
# --8<-- [end:heatmaps]
