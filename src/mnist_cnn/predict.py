"""The prediction entry point: the class of each image file, with its top-3 probabilities.

The image is prepared as the checkpoint's dataset prepared its own (a centred digit for MNIST,
a trimmed item for Fashion-MNIST), and classes are named by the checkpoint's class names."""

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from mnist_cnn.classifier import CheckpointError, Classifier, load_classifier
from mnist_cnn.config import register_resolvers, run_app
from mnist_cnn.data import normalize
from mnist_cnn.digit_images import DigitImageError, read_digit

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


def report(file: Path, probabilities: torch.Tensor, class_names: list[str], as_json: bool) -> str:
    top = probabilities.topk(min(TOP, len(class_names)))
    pairs = list(zip(top.indices.tolist(), top.values.tolist()))
    if as_json:
        return json.dumps({"file": str(file), "label": pairs[0][0], "class": class_names[pairs[0][0]],
                           "top3": [{"label": label, "class": class_names[label], "probability": round(p, 6)}
                                    for label, p in pairs]})
    return (f"{file}: {class_names[pairs[0][0]]}  ("
            + ", ".join(f"{class_names[label]}: {p:.1%}" for label, p in pairs) + ")")


def predict(classifier: Classifier, files: list[Path], as_json: bool) -> int:
    """Print one line per file, predictions on stdout and failures on stderr (JSON lines:
    both on stdout, failures with an "error" key); returns the number of failed files."""
    digits, failures = {}, {}
    for index, file in enumerate(files):
        try:
            digits[index] = read_digit(file, classifier.hparams.preprocessing)
        except DigitImageError as error:
            failures[index] = str(error)
    probabilities = {}
    if digits:
        probabilities = dict(zip(digits, probabilities_of(classifier, torch.stack(list(digits.values())))))
    for index, file in enumerate(files):
        if index in probabilities:
            print(report(file, probabilities[index], classifier.class_names, as_json))
        elif as_json:
            print(json.dumps({"file": str(file), "error": failures[index]}))
        else:
            print(f"error: {file}: {failures[index]}", file=sys.stderr)
    return len(failures)


register_resolvers()


def run(cfg: DictConfig) -> None:
    missing = [key for key in ("ckpt_path", "inputs") if OmegaConf.is_missing(cfg, key)]
    if missing:
        sys.exit(f"error: {' and '.join(missing)} missing: "
                 "python predict.py ckpt_path=<file> inputs=<image, [image,...] or folder>")
    try:
        classifier = load_classifier(cfg.ckpt_path)
    except CheckpointError as error:
        sys.exit(f"error: {error}")
    files = image_files(OmegaConf.to_object(cfg.inputs) if OmegaConf.is_list(cfg.inputs) else str(cfg.inputs))
    if not files:
        sys.exit(f"error: no image files in inputs={cfg.inputs}")
    if predict(classifier, files, cfg.json):
        sys.exit(1)


def main(config_dir: Path) -> None:
    """The app on the configs in `config_dir` (the conf/ beside the script the user ran)."""
    run_app(run, config_dir, "predict")
