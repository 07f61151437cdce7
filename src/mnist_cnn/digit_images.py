"""Any image file -> a 28x28 uint8 image prepared the way the dataset's own images were.

`digit` (MNIST): white on black, the digit fitted into a 20x20 box keeping its aspect ratio,
then placed in a 28x28 field so that its centre of mass sits at the centre.
`product` (Fashion-MNIST): white on black, the item trimmed of its background and fitted
into the whole 28x28 field keeping its aspect ratio, centred by its extent.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

FIELD = 28
BOX = 20
INK_THRESHOLD = 0.2  # of the strongest ink: fainter pixels (paper texture, noise) do not widen the crop
# A product's faint parts (a white shirt on white) are part of it: only near-background is trimmed.
PRODUCT_INK_THRESHOLD = 0.05


class DigitImageError(ValueError):
    """An image file that cannot be read, or that shows no digit."""


def read_digit(path: Path, preprocessing: str = "digit") -> torch.Tensor:
    """The digit (or, with preprocessing="product", the item) in the image file at `path`, as uint8 (28, 28)."""
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"unknown preprocessing {preprocessing!r}: one of {', '.join(PREPROCESSING)}")
    if not path.is_file():
        raise DigitImageError("no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return PREPROCESSING[preprocessing](image)
    except UnidentifiedImageError as error:
        raise DigitImageError("not an image file that Pillow can read") from error
    except (OSError, Image.DecompressionBombError) as error:  # e.g. a truncated file
        raise DigitImageError(f"unreadable image: {error}") from error


def mnist_like(image: Image.Image) -> torch.Tensor:
    """Ink cropped to the digit, fitted into the 20x20 box, centred by mass in 28x28."""
    ink = ink_of(image)
    rows, columns = np.nonzero(ink >= INK_THRESHOLD * ink.max())
    digit = ink[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
    digit = fit_into_box(digit)
    return torch.from_numpy(centre_by_mass(digit))


def fashion_mnist_like(image: Image.Image) -> torch.Tensor:
    """The item trimmed to its extent, fitted into 28x28, centred by its extent (no 20x20 box)."""
    ink = ink_of(image)
    rows, columns = np.nonzero(ink >= PRODUCT_INK_THRESHOLD)
    item = fit_into_box(ink[rows.min():rows.max() + 1, columns.min():columns.max() + 1], FIELD)
    height, width = item.shape
    top, left = (FIELD - height) // 2, (FIELD - width) // 2
    field = np.zeros((FIELD, FIELD), dtype=np.uint8)
    field[top:top + height, left:left + width] = np.round(item * 255).astype(np.uint8)
    return torch.from_numpy(field)


def ink_of(image: Image.Image) -> np.ndarray:
    """Grayscale ink in [0, 1], background 0: inverted when the background (the border) is light."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # transparent pixels are background: lay the image on white paper
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    if image.mode == "I" or image.mode.startswith("I;16"):
        # 16-bit grayscale (0..65535): Pillow's conversion to "L" clips it at 255 instead of scaling
        gray = np.asarray(image, dtype=np.float32).clip(0, 65535) / 65535
    else:
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = background - gray if background > 0.5 else gray - background
    ink = ink.clip(0, None)
    if ink.max() < 0.1:
        raise DigitImageError("no digit found: the image is (nearly) one flat colour")
    return ink / ink.max()


def fit_into_box(digit: np.ndarray, box: int = BOX) -> np.ndarray:
    """Scale so the longer side is `box` pixels, keeping the aspect ratio (anti-aliased)."""
    height, width = digit.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(digit).resize(size, Image.Resampling.LANCZOS)
    scaled = np.asarray(resized).clip(0, None)
    return scaled / scaled.max()  # thin strokes of a big image thin out: keep full contrast


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste into a FIELD x FIELD black image with the centre of mass at the centre."""
    rows, columns = np.indices(digit.shape)
    mass = digit.sum()
    centre_row, centre_column = (rows * digit).sum() / mass, (columns * digit).sum() / mass
    middle = (FIELD - 1) / 2
    height, width = digit.shape
    top = int(np.clip(round(middle - centre_row), 0, FIELD - height))
    left = int(np.clip(round(middle - centre_column), 0, FIELD - width))
    field = np.zeros((FIELD, FIELD), dtype=np.uint8)
    field[top:top + height, left:left + width] = np.round(digit * 255).astype(np.uint8)
    return field


# The data config's `preprocessing`, carried by the checkpoint -> how an image file is prepared.
PREPROCESSING = {"digit": mnist_like, "product": fashion_mnist_like}
