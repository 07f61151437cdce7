"""The prediction entry point: the digits in each image file, left to right, with their top-3 probabilities.

The image is prepared as the checkpoint's dataset prepared its own (each digit found on the
page and centred, for MNIST; the one item trimmed, for Fashion-MNIST), classes are named by the
checkpoint's class names, and a figure shows what was found and what the model saw. A file
export.py wrote serves as well as the checkpoint: it carries the class names and the preparation."""

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from mnist_cnn.classifier import CheckpointError, Classifier
from mnist_cnn.data import normalize
from mnist_cnn.digit_images import DigitImageError, Reading, read_image
from mnist_cnn.export import ExportError, PixelModel, load_model
from mnist_cnn.reading_figure import reading_figure

TOP = 3


def image_files(inputs: str | Sequence[str]) -> list[Path]:
    """The files named by `inputs`, in order; a folder stands for the files in it that
    Pillow knows by their extension (other files in a folder are not digits)."""
    files = []
    for path in map(Path, [inputs] if isinstance(inputs, str) else inputs):
        if path.is_dir():
            known = Image.registered_extensions()
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in known)
        else:
            files.append(path)
    return files


@torch.no_grad()
def probabilities_of(classifier: Classifier, digits: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) MNIST-like digits -> (N, classes) probabilities."""
    return classifier.eval()(normalize(digits)).softmax(dim=1)


def top_classes(probabilities: torch.Tensor, class_names: list[str]) -> list[tuple[int, float]]:
    """(label, probability) of the TOP most probable classes, most probable first."""
    top = probabilities.topk(min(TOP, len(class_names)))
    return list(zip(top.indices.tolist(), top.values.tolist()))


def text_report(file: Path, probabilities: torch.Tensor, class_names: list[str]) -> str:
    """One line: for one digit its top 3, `seven.png: 7  (7: 99.1%, 1: 0.6%, 2: 0.1%)`; for a
    number its digits, each with its confidence, `year.jpg: 2026  (2: 99.8%, 0: 97.0%, 2: 99.9%, 6: 98.5%)`."""
    tops = [top_classes(digit, class_names) for digit in probabilities]
    if len(tops) == 1:
        pairs = tops[0]
        return (f"{file}: {class_names[pairs[0][0]]}  ("
                + ", ".join(f"{class_names[label]}: {p:.1%}" for label, p in pairs) + ")")
    return (f"{file}: {''.join(class_names[top[0][0]] for top in tops)}  ("
            + ", ".join(f"{class_names[top[0][0]]}: {top[0][1]:.1%}" for top in tops) + ")")


def json_records(file: Path, reading: Reading, probabilities: torch.Tensor, class_names: list[str]) -> list[str]:
    """One JSON line per digit, left to right, with its box in the file's pixels."""
    records = []
    for position, (box, digit) in enumerate(zip(reading.boxes, probabilities), start=1):
        pairs = top_classes(digit, class_names)
        records.append(json.dumps({
            "file": str(file), "position": position, "of": len(reading.boxes),
            "box": {side: round(getattr(box, side) / reading.scale) for side in ("left", "top", "right", "bottom")},
            "label": pairs[0][0], "class": class_names[pairs[0][0]],
            "top3": [{"label": label, "class": class_names[label], "probability": round(p, 6)}
                     for label, p in pairs]}))
    return records


def predict(model: PixelModel, files: list[Path], as_json: bool, figures_dir: Path | None) -> int:
    """Print each file's digits, predictions on stdout and failures on stderr (JSON lines:
    both on stdout, failures with an "error" key); returns the number of failed files."""
    failures = 0
    for file in files:
        try:
            reading = read_image(file, model.preprocessing)
        except DigitImageError as error:
            failures += 1
            if as_json:
                print(json.dumps({"file": str(file), "error": str(error)}))
            else:
                print(f"error: {file}: {error}", file=sys.stderr)
            continue
        probabilities = model.probabilities(reading.items)
        names = model.class_names
        print("\n".join(json_records(file, reading, probabilities, names)) if as_json
              else text_report(file, probabilities, names))
        if figures_dir is not None:
            best = probabilities.max(dim=1)
            figure = reading_figure(reading, [names[label] for label in best.indices.tolist()],
                                    best.values.tolist())
            figures_dir.mkdir(parents=True, exist_ok=True)
            figure.savefig(figures_dir / f"{file.stem}_read.png", dpi=100)
    return failures


def run(cfg: DictConfig) -> None:
    missing = [key for key in ("ckpt_path", "inputs") if OmegaConf.is_missing(cfg, key)]
    if missing:
        sys.exit(f"error: {' and '.join(missing)} missing: "
                 "python predict.py ckpt_path=<file> inputs=<image, [image,...] or folder>")
    try:
        model = load_model(cfg.ckpt_path)
    except (CheckpointError, ExportError) as error:
        sys.exit(f"error: {error}")
    files = image_files(OmegaConf.to_object(cfg.inputs) if OmegaConf.is_list(cfg.inputs) else str(cfg.inputs))
    if not files:
        sys.exit(f"error: no image files in inputs={cfg.inputs}")
    figures_dir = None if cfg.figures_dir is None else Path(cfg.figures_dir)
    if predict(model, files, cfg.json, figures_dir):
        sys.exit(1)
