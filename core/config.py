"""Fixed facts the whole package agrees on: class order, malignancy grouping, defaults.

Anything that a trained model depends on is also written into its model card; code that serves
a model reads the card, not these constants, so an old bundle keeps working if these change.
"""
from __future__ import annotations

from pathlib import Path

#: HAM10000 diagnoses in the model's output order (alphabetical, as in the dataset's papers).
CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

#: Plain-language names for clinicians.
CLASS_NAMES: dict[str, str] = {
    "akiec": "Actinic keratosis / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}

#: Malignant (or pre-malignant / in situ) classes; the rest are benign.
MALIGNANT: tuple[str, ...] = ("akiec", "bcc", "mel")
MELANOMA = "mel"

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = REPO_ROOT / "weights"
SPLITS_DIR = REPO_ROOT / "splits"
DEFAULT_MODEL = "fusion-lite0"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"

#: ImageNet statistics: the pretrained backbones expect them.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

SEED = 42
DATA_LICENCE = "CC BY-NC 4.0"
HAM10000_SOURCE = (
    "HAM10000 (Tschandl, Rosendahl & Kittler, Sci. Data 5, 180161, 2018; doi:10.7910/DVN/DBW86T), "
    "200x150 RGB copies of all 10,015 images"
)
