"""Any image file -> 28x28 uint8 images prepared the way the dataset's own images were.

`digit` (MNIST): the page's lighting taken out, each digit found (read left to right), made
white on black, fitted into a 20x20 box keeping its aspect ratio, and placed in a 28x28 field
so that its centre of mass sits at the centre.
`product` (Fashion-MNIST): one item, white on black, trimmed of its background and fitted
into the whole 28x28 field keeping its aspect ratio, centred by its extent.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_cnn.digit_segmentation import Box, bounding_box, digits_in
from mnist_cnn.photo_ink import border_of, evenly_lit, ink_mask, ink_of

FIELD = 28
BOX = 20
# Stroke widths of MNIST's training digits in the 20x20 box (2 x area / outline, at half ink):
MNIST_STROKE = 2.0  # the median, what a too thin stroke is widened to
THINNEST_STROKE = 1.3  # the 5th percentile
# In a photo, faint ink counts as a digit's within this many pixels of its strong strokes only
PHOTO_INK_REACH = 2
MAX_SIDE = 1024  # larger photos are scaled down first: a digit needs far fewer pixels than a phone takes
# A product's faint parts (a white shirt on white) are part of it: only near-background is trimmed.
PRODUCT_INK_THRESHOLD = 0.05


class DigitImageError(ValueError):
    """An image file that cannot be read, or that shows no digit."""


@dataclass
class Reading:
    """What was found on one image: the model's inputs, and where each came from."""
    items: torch.Tensor  # uint8 (N, 28, 28), left to right
    boxes: list[Box]  # of each item, on `page`
    page: np.ndarray  # the image as it was read: grayscale in [0, 1], at most MAX_SIDE wide and high
    scale: float = 1.0  # pixels of `page` per pixel of the file


def read_image(path: Path, preprocessing: str = "digit") -> Reading:
    """The digits in the image file at `path` (with preprocessing="product": the one item)."""
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"unknown preprocessing {preprocessing!r}: one of {', '.join(PREPROCESSING)}")
    if not path.is_file():
        raise DigitImageError("no such file")
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)  # as a phone shows its photo
            reading = PREPROCESSING[preprocessing](grayscale(upright))
            reading.scale = reading.page.shape[1] / upright.width
            return reading
    except UnidentifiedImageError as error:
        raise DigitImageError("not an image file that Pillow can read") from error
    except (OSError, Image.DecompressionBombError) as error:  # e.g. a truncated file
        raise DigitImageError(f"unreadable image: {error}") from error


def grayscale(image: Image.Image) -> np.ndarray:
    """The image on white where it is transparent, as grayscale in [0, 1], at most MAX_SIDE wide and high."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    if image.mode == "I" or image.mode.startswith("I;16"):
        # 16-bit grayscale (0..65535): Pillow's conversion to "L" clips it at 255 instead of scaling
        gray = np.asarray(image, dtype=np.float32).clip(0, 65535) / 65535
    else:
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255
    scale = MAX_SIDE / max(gray.shape)
    if scale < 1:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = np.array(Image.fromarray(gray).resize(size, Image.Resampling.BOX))
    return gray


def read_digits(gray: np.ndarray) -> Reading:
    """Each digit on the page, left to right, framed as in MNIST."""
    ink = ink_of(gray)
    digits = digits_in(ink_mask(ink, reach=None if evenly_lit(gray) else PHOTO_INK_REACH))
    if not digits:
        raise DigitImageError("no digit found: no ink stands out from the paper (a blank page?)")
    framed = []
    for digit in digits:  # boxed as MNIST's digits were: by their ink
        rows, columns = slice(digit.box.top, digit.box.bottom), slice(digit.box.left, digit.box.right)
        mask = digit.mask[rows, columns]
        # one pixel around the mask keeps the anti-aliased edge of each stroke
        near = F.max_pool2d(torch.from_numpy(mask)[None, None].float(), 3, 1, 1)[0, 0].numpy() > 0
        framed.append(mnist_framed(with_mnist_strokes(ink[rows, columns] * near, mask)))
    return Reading(torch.stack(framed), [digit.box for digit in digits], gray)


def read_product(gray: np.ndarray) -> Reading:
    """The one item on its background, trimmed and fitted into the whole 28x28 field."""
    ink = plain_background_ink(gray)
    box = bounding_box(ink >= PRODUCT_INK_THRESHOLD)
    item = fit_into_box(ink[box.top:box.bottom, box.left:box.right], FIELD)
    height, width = item.shape
    top, left = (FIELD - height) // 2, (FIELD - width) // 2
    field = np.zeros((FIELD, FIELD), dtype=np.uint8)
    field[top:top + height, left:left + width] = np.round(item * 255).astype(np.uint8)
    return Reading(torch.from_numpy(field)[None], [box], gray)


def plain_background_ink(gray: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] against a plain background, the colour of the border (a product shot)."""
    background = float(np.median(border_of(gray)))
    ink = (background - gray if background > 0.5 else gray - background).clip(0, None)
    if ink.max() < 0.1:
        raise DigitImageError("no item found: the image is (nearly) one flat colour")
    return ink / ink.max()


def stroke_width(mask: np.ndarray) -> float:
    """The mean width of the strokes in `mask`, in pixels: twice the area over the length of
    the outline (a stroke w wide and L long has area wL and an outline of about 2L)."""
    padded = np.pad(mask, 1)
    outline = np.count_nonzero(padded[1:] != padded[:-1]) + np.count_nonzero(padded[:, 1:] != padded[:, :-1])
    return 2 * float(mask.sum()) / outline


def with_mnist_strokes(digit: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The digit's ink, its strokes widened when, fitted into the 20x20 box, they would be
    thinner than almost any MNIST digit's (a fine pen photographed large)."""
    side = max(mask.shape)
    width = stroke_width(mask) * BOX / side
    if width >= THINNEST_STROKE:
        return digit
    radius = round((MNIST_STROKE - width) / 2 * side / BOX)
    if radius < 1:
        return digit
    padded = torch.from_numpy(np.pad(digit, radius))[None, None]
    return F.max_pool2d(padded, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy()


def mnist_framed(digit: np.ndarray) -> torch.Tensor:
    """A digit's ink, fitted into the 20x20 box and centred by mass in 28x28."""
    return torch.from_numpy(centre_by_mass(fit_into_box(digit / digit.max())))


def fit_into_box(digit: np.ndarray, box: int = BOX) -> np.ndarray:
    """Scale so the longer side is `box` pixels, keeping the aspect ratio (anti-aliased)."""
    height, width = digit.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    scaled = np.asarray(resized).clip(0, None)
    return scaled / scaled.max()  # thin strokes of a big image thin out: keep full contrast


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste into a FIELD x FIELD black image with the centre of mass at the centre."""
    rows, columns = np.indices(digit.shape)
    mass = digit.sum()
    centre_row, centre_column = (rows * digit).sum() / mass, (columns * digit).sum() / mass
    middle = FIELD / 2  # pixel (14, 14), not the geometric 13.5: where MNIST's training digits have theirs
    height, width = digit.shape
    top = int(np.clip(round(middle - centre_row), 0, FIELD - height))
    left = int(np.clip(round(middle - centre_column), 0, FIELD - width))
    field = np.zeros((FIELD, FIELD), dtype=np.uint8)
    field[top:top + height, left:left + width] = np.round(digit * 255).astype(np.uint8)
    return field


# The data config's `preprocessing`, carried by the checkpoint -> how an image is read.
PREPROCESSING = {"digit": read_digits, "product": read_product}
