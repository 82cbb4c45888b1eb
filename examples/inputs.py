"""Real-world inputs: DICOM, a messy folder, safe model files, resumable training.

Run: python examples/inputs.py  (about 10 s on a laptop CPU; needs pydicom)
Research and education only; not a medical device.
"""

import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from cxrkit import ImageReadError, PneumoniaClassifier, load_image_folder, read_image
from cxrkit.datasets import make_synthetic_cxr

work = Path(tempfile.mkdtemp())
images, labels, _ = make_synthetic_cxr(40, image_size=64, random_state=0)

# --8<-- [start:dicom]
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

ds = Dataset()
ds.file_meta = FileMetaDataset()
ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX
ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
ds.Rows, ds.Columns = images[0].shape
ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
ds.RescaleSlope, ds.RescaleIntercept = 1, 0
ds.WindowCenter, ds.WindowWidth = 2048, 4096
ds.PixelData = ((255 - images[0].astype(np.uint16)) * 16).tobytes()  # bone dark
ds.save_as(work / "IM0001", enforce_file_format=True)  # no extension, as PACS does

image = read_image(work / "IM0001")  # windowed, inverted: bone is bright
print(image.dtype, image.shape, int(np.abs(image.astype(int) - images[0]).max()))
# --8<-- [end:dicom]

# --8<-- [start:folder]
for label in ("NORMAL", "PNEUMONIA"):
    (work / "xrays" / label).mkdir(parents=True)
for i, (img, label) in enumerate(zip(images, labels)):
    Image.fromarray(img).save(work / "xrays" / label / f"img{i}.png")
(work / "xrays" / "NORMAL" / "download.png").write_bytes(b"\x89PNG\r\n")  # truncated
(work / "xrays" / "NORMAL" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored

X, y = load_image_folder(work / "xrays")
clf = PneumoniaClassifier(
    model="simple_cnn", image_size=32, max_epochs=2, random_state=0
)
try:
    clf.fit(X, y)  # default on_error="raise": one error listing every bad file
except ImageReadError as err:
    print(sorted(Path(p).name for p in err.failures))

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the one warning that lists skipped files
    clf.set_params(on_error="skip").fit(X, y)
print([Path(p).name for p in clf.skipped_files_])
# --8<-- [end:folder]

# --8<-- [start:save]
path = clf.save(work / "model.cxr")  # tensors + JSON, written atomically
same = PneumoniaClassifier.load(path)  # torch.load(weights_only=True)
print(
    same.classes_,
    bool(np.allclose(same.predict_proba(images[:4]), clf.predict_proba(images[:4]))),
)
# --8<-- [end:save]

# --8<-- [start:resume]
clf = PneumoniaClassifier(
    model="simple_cnn",
    image_size=32,
    max_epochs=3,
    random_state=0,
    checkpoint_dir=work / "run1",
)
clf.fit(images, labels)  # if interrupted, the same call resumes from the last epoch
print(len(clf.history_), sorted(p.name for p in (work / "run1").iterdir()))
# --8<-- [end:resume]
