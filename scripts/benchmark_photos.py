"""How well predict.py reads photos of handwriting, against the clean MNIST test set.

    python scripts/benchmark_photos.py --checkpoint default=logs/runs/<run>/checkpoints/best.ckpt \\
        --checkpoint best=logs/runs/<best run>/checkpoints/best.ckpt

MNIST test digits are photographed by mnist_cnn.synthetic_photos: alone (single-digit photos)
and joined into numbers of 2 to 4 digits, on gray paper, unevenly lit, turned slightly, blurred,
noised and JPEG-compressed, sometimes ruled. Each photo is read as predict.py reads a file. A
number is right when every digit is found and classified right; a digit in a number is right
when the number's digits were all found (as many as written) and that one is classified right.
Every model sees the same photos. Prints a Markdown table for docs/benchmarks.md.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_cnn.classifier import load_classifier
from mnist_cnn.data import TEST_IMAGES, TEST_LABELS, read_idx
from mnist_cnn.digit_images import DigitImageError, grayscale, read_digits
from mnist_cnn.mnist_files import raw_dir_of
from mnist_cnn.predict import probabilities_of
from mnist_cnn.synthetic_photos import photo_of_number

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NUMBER_LENGTHS = (2, 3, 4)


@dataclass
class Photo:
    labels: list[int]  # the digits written, left to right
    digits: torch.Tensor | None  # what predict.py gives the model; None when it found no digit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH",
                        help="a model to measure (repeatable)")
    parser.add_argument("--singles", type=int, default=2000, help="single-digit photos")
    parser.add_argument("--numbers", type=int, default=500, help="photos of numbers of each length 2, 3 and 4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / "data", help="holds MNIST/raw")
    return parser.parse_args()


def photographed(images: torch.Tensor, labels: torch.Tensor, length: int, count: int,
                 rng: np.random.Generator) -> list[Photo]:
    """`count` photos of numbers of `length` test digits, each read as predict.py reads a file."""
    photos = []
    for _ in range(count):
        picks = rng.choice(len(images), size=length, replace=False)
        photo = photo_of_number([images[pick] for pick in picks], rng)
        try:
            digits = read_digits(grayscale(photo.image)).items
        except DigitImageError:
            digits = None
        photos.append(Photo([int(labels[pick]) for pick in picks], digits))
    return photos


def scores(classifier, photos: list[Photo]) -> tuple[float, float]:
    """(digit accuracy, number accuracy) of `classifier` on `photos`."""
    right_digits = right_numbers = 0
    for photo in photos:
        if photo.digits is None or len(photo.digits) != len(photo.labels):
            continue
        predicted = probabilities_of(classifier, photo.digits).argmax(dim=1).tolist()
        hits = sum(p == label for p, label in zip(predicted, photo.labels))
        right_digits += hits
        right_numbers += hits == len(photo.labels)
    return right_digits / sum(len(photo.labels) for photo in photos), right_numbers / len(photos)


@torch.no_grad()
def clean_accuracy(classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = torch.cat([probabilities_of(classifier, batch).argmax(dim=1) for batch in images.split(1000)])
    return float((predicted == labels).float().mean())


def main() -> None:
    args = parse_args()
    raw_dir = raw_dir_of(args.data_dir)
    images, labels = read_idx(raw_dir / TEST_IMAGES), read_idx(raw_dir / TEST_LABELS)
    rng = np.random.default_rng(args.seed)
    singles = photographed(images, labels, 1, args.singles, rng)
    numbers = {length: photographed(images, labels, length, args.numbers, rng) for length in NUMBER_LENGTHS}
    found = sum(photo.digits is not None and len(photo.digits) == len(photo.labels)
                for photos in [singles, *numbers.values()] for photo in photos)
    print(f"{found} of {len(singles) + len(NUMBER_LENGTHS) * args.numbers} photos: "
          "as many digits found as written")
    print("| model | clean test accuracy (10,000) | single-digit photos | digits in numbers | "
          + " | ".join(f"numbers of {length} right" for length in NUMBER_LENGTHS) + " |")
    print("| --- " * (4 + len(NUMBER_LENGTHS)) + "|")
    all_number_photos = [photo for photos in numbers.values() for photo in photos]
    for name, path in (spec.split("=", 1) for spec in args.checkpoint):
        classifier = load_classifier(path)
        cells = [clean_accuracy(classifier, images, labels), scores(classifier, singles)[0],
                 scores(classifier, all_number_photos)[0], *(scores(classifier, numbers[length])[1]
                                                             for length in NUMBER_LENGTHS)]
        print(f"| {name} | " + " | ".join(f"{cell:.2%}" for cell in cells) + " |")


if __name__ == "__main__":
    main()
