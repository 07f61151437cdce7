"""Photo-like images of MNIST digits: a digit, or a number, written on paper and photographed.

Used by scripts/benchmark_photos.py and the tests to measure how predict.py reads what people
give it. A photo is modelled as paper and ink (each reflecting part of the light), sometimes
ruled lines, turned slightly, lit unevenly (a gradient, sometimes a soft shadow), then blurred
by the lens, noised by the sensor and compressed as a JPEG.
"""

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

DIGIT_BOX = 20  # rows of an MNIST digit's ink box: the height a digit is scaled by
GAP = (1, 5)  # pixels between the digits of a number, in MNIST's 28-pixel units
TINT = np.array([1.0, 0.96, 0.88])  # warm indoor light on white paper


@dataclass
class SyntheticPhoto:
    image: Image.Image  # RGB
    centres: list[tuple[float, float]]  # (row, column) of each digit's box on the photo, left to right


def number_strip(digits: list[torch.Tensor], rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """The digits (uint8, 28x28 each) side by side as ink in [0, 1], with the column of each one's centre."""
    parts, centres, width = [], [], 0
    for digit in digits:
        ink = digit.numpy().astype(np.float32) / 255
        columns = np.nonzero(ink.max(axis=0) > 0)[0]
        ink = ink[:, columns.min():columns.max() + 1]
        gap = np.zeros((28, int(rng.integers(*GAP, endpoint=True))), dtype=np.float32)
        parts += [gap, ink]
        centres.append(width + gap.shape[1] + ink.shape[1] / 2)
        width += gap.shape[1] + ink.shape[1]
    parts.append(np.zeros((28, GAP[1]), dtype=np.float32))
    return np.concatenate(parts, axis=1), centres


def photo_of_number(digits: list[torch.Tensor], rng: np.random.Generator, ruled: bool | None = None,
                    max_rotation_deg: float = 5.0) -> SyntheticPhoto:
    """A photo of `digits` written side by side on a sheet (no digits: a blank sheet).

    `ruled`: with ruled lines (None: on one sheet in three)."""
    paper_width = int(rng.integers(240, 480))
    paper_height = int(paper_width * rng.uniform(0.6, 0.85))
    paper, ink = rng.uniform(0.55, 0.95), rng.uniform(0.03, 0.3)  # the light each reflects
    digit_height = paper_height * rng.uniform(0.15, 0.45)
    strokes = np.zeros((paper_height, paper_width), dtype=np.float32)
    centres = []
    if digits:
        strip, strip_centres = number_strip(digits, rng)
        scale = min(digit_height / DIGIT_BOX, 0.9 * paper_width / strip.shape[1])
        size = (round(strip.shape[1] * scale), round(28 * scale))
        strip = np.asarray(Image.fromarray(strip).resize(size, Image.Resampling.BICUBIC)).clip(0, 1)
        top = int(rng.integers(0, paper_height - size[1] + 1))
        left = int(rng.integers(0, paper_width - size[0] + 1))
        strokes[top:top + size[1], left:left + size[0]] = strip
        centres = [(top + 14 * scale, left + column * scale) for column in strip_centres]
    if ruled if ruled is not None else rng.random() < 1 / 3:
        lines = ruled_lines(paper_height, paper_width, spacing=rng.uniform(0.8, 1.5) * digit_height, rng=rng)
        strokes = np.maximum(strokes, lines)
    reflectance = paper + (ink - paper) * strokes
    angle = rng.uniform(-max_rotation_deg, max_rotation_deg)
    reflectance = np.asarray(Image.fromarray(reflectance.astype(np.float32)).rotate(
        angle, Image.Resampling.BILINEAR, fillcolor=float(paper)))
    photo = reflectance * lighting(paper_height, paper_width, rng)
    return SyntheticPhoto(camera(photo, rng), [turned(centre, angle, paper_height, paper_width)
                                               for centre in centres])


def ruled_lines(height: int, width: int, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Faint horizontal lines across the sheet, as ink coverage in [0, 1]."""
    lines = np.zeros((height, width), dtype=np.float32)
    darkness, thickness = rng.uniform(0.25, 0.5), int(rng.integers(1, 3))
    for row in np.arange(rng.uniform(0, spacing), height, spacing).astype(int):
        lines[row:row + thickness] = darkness
    return lines


def lighting(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The light falling on the sheet: brighter on one side, and sometimes a soft shadow."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    along = (np.cos(direction) * columns / width + np.sin(direction) * rows / height)
    along = (along - along.min()) / (along.max() - along.min())
    light = 1 - rng.uniform(0, 0.5) * along
    if rng.random() < 1 / 3:
        edge = rng.uniform(0.2, 0.8)
        softness = rng.uniform(0.03, 0.1)
        light *= 1 - rng.uniform(0.15, 0.35) / (1 + np.exp(-(along - edge) / softness))
    return light


def camera(photo: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """What a phone makes of the light: colour, lens blur, sensor noise, JPEG compression."""
    rgb = (photo[..., None] * TINT * 255).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, 8), size=rgb.shape)
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=int(rng.integers(30, 86)))
    buffer.seek(0)
    with Image.open(buffer) as jpeg:
        return jpeg.convert("RGB")


def turned(point: tuple[float, float], angle_deg: float, height: int, width: int) -> tuple[float, float]:
    """Where `point` (row, column) lands when the sheet turns by `angle_deg` anticlockwise, as Pillow turns it."""
    theta = np.radians(angle_deg)
    row, column = point[0] - height / 2, point[1] - width / 2
    return (height / 2 - column * np.sin(theta) + row * np.cos(theta),
            width / 2 + column * np.cos(theta) + row * np.sin(theta))
