"""Where the ink is in a photo of paper: the page's own light and colour taken out.

A photo multiplies the paper and the ink by the light that falls on them, and the light
varies across the sheet. So the ink is measured against the paper around it: the fraction of
the paper's brightness it takes away, which is the same in a bright corner and a dim one.
"""

import numpy as np
import torch
import torch.nn.functional as F

from mnist_cnn.digit_segmentation import pieces_holding

BLOCKS = 6  # the paper's brightness is sampled on about this many blocks across the shorter side
MIN_BLOCK = 8  # pixels: a block is wider than a stroke, even in a small image
EVEN_BORDER = 0.1  # a border whose pixels span less than this is one colour: a scan, not a photo
PAPER_QUANTILE = 0.9  # in a block, the brighter pixels are paper even where a stroke crosses it
MIN_CONTRAST = 0.2  # ink takes at least this fraction of the paper's light: fainter is noise or shade
# Of the darkest ink's contrast: ruled lines and shadows are fainter than what the pen wrote.
RELATIVE_CONTRAST = 0.5
STRONGEST_INK = 0.98  # the quantile of the inked pixels taken as the darkest ink, so specks do not count


def blocks_of(image: np.ndarray) -> torch.Tensor:
    """The image cut into square blocks, about BLOCKS across its shorter side: (rows, columns, pixels)."""
    height, width = image.shape
    block = max(MIN_BLOCK, min(height, width) // BLOCKS)
    rows, columns = -(-height // block), -(-width // block)
    padded = F.pad(torch.from_numpy(image)[None, None], (0, columns * block - width, 0, rows * block - height),
                   mode="replicate")
    return padded.unfold(2, block, block).unfold(3, block, block).reshape(rows, columns, -1)


def border_of(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def evenly_lit(gray: np.ndarray) -> bool:
    """True for an image whose border is one even colour: a scan or a drawing, not a photo."""
    low, high = np.quantile(border_of(gray), [0.05, 0.95])
    return high - low < EVEN_BORDER


def ink_is_darker(gray: np.ndarray) -> bool:
    """True for dark ink on light paper, False for light ink on a dark ground.

    Where the border is one even colour (a scan, a drawing, an MNIST image), that is the
    background, and the ink is whatever lies farthest from it. In a photo the light varies:
    in most parts of the page the ink is the minority and lies far from the typical pixel on
    one side, and the side with the larger departures, summed over the page's blocks, is the
    ink's (each block is nearly evenly lit)."""
    if evenly_lit(gray):
        background = float(np.median(border_of(gray)))
        darkest, lightest = np.quantile(gray, [0.005, 0.995])
        return background - darkest >= lightest - background
    blocks = blocks_of(gray)
    low, typical, high = blocks.quantile(torch.tensor([0.01, 0.5, 0.99]), dim=-1)
    return bool((typical - low).sum() >= (high - typical).sum())


def paper_brightness(paper: np.ndarray) -> np.ndarray:
    """The brightness of the bare paper under each pixel, as a smooth field (dark ink on light)."""
    blocks = blocks_of(paper)
    rows, columns, pixels = blocks.shape
    levels = blocks.quantile(PAPER_QUANTILE, dim=-1)[None, None]
    # a block wholly inside a broad stroke is dark: its neighbours' median is the paper there
    neighbours = F.pad(levels, (1, 1, 1, 1), mode="replicate").unfold(2, 3, 1).unfold(3, 3, 1)
    levels = neighbours.reshape(rows, columns, 9).median(dim=-1).values.numpy()
    block = round(pixels ** 0.5)
    return between_block_centres(levels, block, paper.shape)


def between_block_centres(levels: np.ndarray, block: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of one value per block, known at each block's centre, to every
    pixel; beyond the outer centres the slope goes on, as the light falls off towards the edges."""
    def weights(size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        position = (np.arange(size) + 0.5) / block - 0.5  # in block units, 0 at the first centre
        lower = np.clip(np.floor(position), 0, max(count - 2, 0)).astype(int)
        return lower, (position - lower if count > 1 else np.zeros(size))
    row, row_fraction = weights(shape[0], levels.shape[0])
    column, column_fraction = weights(shape[1], levels.shape[1])
    below, right = np.minimum(row + 1, levels.shape[0] - 1), np.minimum(column + 1, levels.shape[1] - 1)
    top = levels[row][:, column] * (1 - column_fraction) + levels[row][:, right] * column_fraction
    bottom = levels[below][:, column] * (1 - column_fraction) + levels[below][:, right] * column_fraction
    return (top * (1 - row_fraction[:, None]) + bottom * row_fraction[:, None]).astype(np.float32)


def ink_of(gray: np.ndarray) -> np.ndarray:
    """Grayscale in [0, 1] -> ink in [0, 1]: the fraction of the paper's light each pixel lacks
    (for light ink on a dark ground, of the ground's darkness)."""
    paper = gray if ink_is_darker(gray) else 1 - gray
    background = np.maximum(paper_brightness(paper), 1e-3)
    return (1 - paper / background).clip(0, 1).astype(np.float32)


def otsu_threshold(values: np.ndarray) -> float:
    """The level that best splits `values` (in [0, 1]) into two classes (Otsu, 1979)."""
    counts, edges = np.histogram(values, bins=256, range=(0, 1))
    levels = (edges[:-1] + edges[1:]) / 2
    weight_below = np.cumsum(counts)
    weight_above = weight_below[-1] - weight_below
    sum_below = np.cumsum(counts * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_below = sum_below / weight_below
        mean_above = (sum_below[-1] - sum_below) / weight_above
        between = weight_below * weight_above * (mean_below - mean_above) ** 2
    return float(edges[1:][np.argmax(np.nan_to_num(between))])  # a flat image: the lowest level


def ink_mask(ink: np.ndarray, reach: int | None = None) -> np.ndarray:
    """The pixels that are ink, by hysteresis: pixels above a faint level (Otsu's, and never
    below MIN_CONTRAST) joined to a core of strong ink (a 3x3 neighbourhood at least half as dark
    as the darkest ink), through faint ink (`reach` None) or within `reach` pixels of it.
    A stroke's thin ends stay; sensor noise has no core. In a photo, ruled lines and shadows
    are fainter than what the pen wrote, and a `reach` keeps where they touch a digit out of it."""
    faint = max(otsu_threshold(ink), MIN_CONTRAST)
    inked = ink > faint
    if not inked.any():
        return inked
    strong = max(faint, RELATIVE_CONTRAST * np.quantile(ink[inked], STRONGEST_INK))
    core = F.avg_pool2d(torch.from_numpy(ink)[None, None], 3, stride=1, padding=1, count_include_pad=False) > strong
    if reach is None:
        return pieces_holding(inked, seeds=core[0, 0].numpy() & inked)
    near_core = F.max_pool2d(core.float(), 2 * reach + 1, stride=1, padding=reach)[0, 0].numpy() > 0
    return inked & near_core
