"""Classify chest X-rays with an exported ONNX model: no cxrkit, no torch.

Usage::

    cxrkit export model.cxr model.onnx           # or clf.export_onnx("model.onnx")
    python examples/onnx_inference.py model.onnx IMAGE [IMAGE ...]

Needs only numpy, Pillow and onnxruntime (and OpenCV for a model trained
with ``preprocess="clahe"``). The preprocessing is read from the model's
metadata and reproduces cxrkit's for 8-bit images (JPEG, PNG, BMP, TIFF;
colour becomes grey), the model's ``preprocess`` steps included (the "cpu"
recipe's histogram equalisation, for one). 16-bit images and DICOM need
cxrkit's min-max stretch or windowing first (``cxrkit.read_image``). The
tests check that this script gives cxrkit's probabilities on real
radiographs, with and without preprocess steps.

For research and education; not a medical device.
"""

# --8<-- [start:preprocess]
import json

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def preprocess(path: str, meta: dict[str, str]) -> np.ndarray:
    """One image file as the model's input: float32 (1, size, size)."""
    size = int(meta["image_size"])
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("L", (size, size))  # decode large JPEGs at reduced scale
        img = ImageOps.exif_transpose(img).convert("L")  # grey levels (luma)
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    for step in meta.get("preprocess", "none").split("+"):  # e.g. "equalize"
        img = preprocess_step(img, step)
    grey = np.asarray(img, dtype=np.float32) / 255.0
    x = (grey - float(meta["mean"])) / float(meta["std"])
    return x[np.newaxis]  # one channel


def preprocess_step(img: Image.Image, step: str) -> Image.Image:
    """One of cxrkit's preprocess steps on the resized 8-bit image, as
    cxrkit.images.model_images does it."""
    if step == "none":
        return img
    if step == "equalize":  # global histogram equalisation
        return ImageOps.equalize(img)
    grey = np.asarray(img)
    if step == "stretch":  # 1st-99th percentiles to 0-255
        lo, hi = np.percentile(grey, [1, 99])
        if hi <= lo:
            return img
        scaled = (grey.astype(np.float32) - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
    if step == "crop":  # an 8% band off every side, resized back
        w, h = img.size
        dx, dy = round(w * 0.08), round(h * 0.08)
        inner = img.crop((dx, dy, w - dx, h - dy))
        return inner.resize((w, h), Image.Resampling.BILINEAR)
    if step == "clahe":  # needs OpenCV: pip install opencv-python-headless
        import cv2

        tiles = (8, 8) if min(grey.shape) >= 64 else (2, 2)
        clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=tiles)
        return Image.fromarray(clahe.apply(grey))
    raise ValueError(f"unknown preprocess step {step!r} in the model's metadata")


# --8<-- [end:preprocess]


# --8<-- [start:predict]
def predict(
    session: ort.InferenceSession, paths: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (columns in the order of ``classes``) and labels."""
    meta = session.get_modelmeta().custom_metadata_map
    classes = np.array(json.loads(meta["classes"]))
    batch = np.stack([preprocess(p, meta) for p in paths])  # (n, 1, size, size)
    (proba,) = session.run([meta["output_name"]], {meta["input_name"]: batch})
    if meta["decision_rule"] == "threshold":  # two classes, a chosen threshold
        pos = int(meta["positive_column"])
        called = proba[:, pos] >= float(meta["threshold"])
        labels = np.where(called, classes[pos], classes[1 - pos])
    else:
        labels = classes[proba.argmax(axis=1)]
    return proba, labels


# --8<-- [end:predict]


def main(argv: list[str] | None = None) -> None:
    import argparse
    import csv
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="ONNX file written by cxrkit export")
    parser.add_argument("images", nargs="+", help="image files")
    args = parser.parse_args(argv)
    model_path, image_paths = args.model, args.images
    # --8<-- [start:session]
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    proba, labels = predict(session, image_paths)  # e.g. ["xray1.jpeg", "xray2.png"]
    # --8<-- [end:session]
    classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])
    writer = csv.writer(sys.stdout)
    writer.writerow(["path", "predicted"] + [f"p_{c}" for c in classes])
    for path, label, row in zip(image_paths, labels, proba):
        writer.writerow([path, label, *(f"{v:.4f}" for v in row)])


if __name__ == "__main__":
    main()
