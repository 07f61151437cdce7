"""The digits on a page, left to right: ink mask -> a mask and a box per digit.

Ink falls into connected pieces. Ruled lines are cut out of the pieces they cross, specks are
dropped, and pieces stacked one above another (the bar of a 5, a stroke cut by a line) are
joined: what is left, read left to right, are the digits.
"""

import itertools
from dataclasses import dataclass

import numpy as np

RULED_LINE_SPAN = 0.6  # ink this wide (of the image) and thin is a ruled line, not a digit
LINE_ASPECT = 15  # a ruled line is at least this many times wider than it is thick
SPECK_AREA = 0.03  # of the largest piece's area: dust, noise and JPEG blocks
STACKED = 0.5  # pieces overlapping by this much of the narrower one's width are one digit ...
# ... if the gap between them is no taller than the taller piece (the bar of a 5 above its body)
DIGIT_HEIGHT = 0.4  # of the tallest digit: shorter groups (a dash, a dot) are not digits
MIN_DIGIT_PIXELS = 5  # a digit is at least this many pixels tall


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    bottom: int  # exclusive, like a slice
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def joined(self, other: "Box") -> "Box":
        """The smallest box around both."""
        return Box(min(self.top, other.top), min(self.left, other.left),
                   max(self.bottom, other.bottom), max(self.right, other.right))


def run_labels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 8-connected pieces of `mask`, as runs: each row's ink is cut into runs, and a run
    touching a run of the row above (diagonally too) joins its piece, kept as a union-find
    forest over the runs. Returns each run's row, start, end (exclusive) and piece number."""
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # in the same order as the starts
    parent = list(range(len(rows)))

    def root(run: int) -> int:
        while parent[run] != run:
            parent[run] = parent[parent[run]]
            run = parent[run]
        return run

    first_of_row = np.searchsorted(rows, np.arange(mask.shape[0] + 1))
    for row in range(1, mask.shape[0]):
        above, below = first_of_row[row - 1], first_of_row[row]
        for run in range(below, first_of_row[row + 1]):
            while above < below and ends[above] < starts[run]:  # ends before this run's diagonal
                above += 1
            touching = above
            while touching < below and starts[touching] <= ends[run]:
                parent[root(touching)] = root(run)
                touching += 1
    return rows, starts, ends, np.array([root(run) for run in range(len(rows))], dtype=np.int64)


def painted(shape: tuple[int, int], rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for row, start, end in zip(rows, starts, ends):
        mask[row, start:end] = True
    return mask


def connected_pieces(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected pieces of `mask`, one boolean mask each, specks left out."""
    rows, starts, ends, pieces = run_labels(mask)
    if not len(pieces):
        return []
    areas = np.bincount(pieces, weights=ends - starts, minlength=len(rows))
    kept = np.nonzero(areas >= SPECK_AREA * areas.max())[0]
    return [painted(mask.shape, *(part[pieces == piece] for part in (rows, starts, ends))) for piece in kept]


def pieces_holding(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The pieces of `mask` that hold at least one pixel of `seeds`, whole."""
    rows, starts, ends, pieces = run_labels(mask)
    seeded = np.array([seeds[row, start:end].any() for row, start, end in zip(rows, starts, ends)], dtype=bool)
    kept = np.isin(pieces, pieces[seeded])
    return painted(mask.shape, rows[kept], starts[kept], ends[kept])


def bounding_box(mask: np.ndarray) -> Box:
    rows, columns = np.nonzero(mask)
    return Box(int(rows.min()), int(columns.min()), int(rows.max()) + 1, int(columns.max()) + 1)


def without_ruled_line(piece: np.ndarray) -> np.ndarray:
    """`piece` with the ruled line through it removed, or unchanged if it holds none.

    A line may be tilted and may carry the digits written across it: its course is fitted to
    the columns where only the line is, and the pixels within its thickness of it are removed."""
    box = bounding_box(piece)
    if box.width < RULED_LINE_SPAN * piece.shape[1]:
        return piece
    columns = np.nonzero(piece.any(axis=0))[0]
    counts = piece[:, columns].sum(axis=0)
    thickness = float(np.median(counts))
    if box.width < LINE_ASPECT * thickness:
        return piece  # a broad stroke, such as the bar of a wide 7
    bare = columns[counts <= thickness + 1]
    rows = np.arange(piece.shape[0])[:, None]
    centres = (piece[:, bare] * rows).sum(axis=0) / piece[:, bare].sum(axis=0)
    slope, intercept = np.polyfit(bare, centres, 1)
    course = slope * np.arange(piece.shape[1]) + intercept
    return piece & (np.abs(rows - course[None, :]) > thickness / 2 + 1)


@dataclass(frozen=True)
class Digit:
    mask: np.ndarray  # the digit's ink, on the whole page
    box: Box  # around it

    def joined(self, other: "Digit") -> "Digit":
        return Digit(self.mask | other.mask, self.box.joined(other.box))


def digits_in(mask: np.ndarray) -> list[Digit]:
    """Each digit in the ink `mask`, left to right; empty when there is none."""
    pieces = []
    for piece in connected_pieces(mask):
        cut = without_ruled_line(piece)
        pieces += [piece] if cut is piece else connected_pieces(cut)
    if not pieces:
        return []
    groups = join_stacked([Digit(piece, bounding_box(piece)) for piece in pieces])
    tallest = max(group.box.height for group in groups)
    return [group for group in groups if group.box.height >= max(DIGIT_HEIGHT * tallest, MIN_DIGIT_PIXELS)]


def join_stacked(pieces: list[Digit]) -> list[Digit]:
    """Pieces close above or below one another are joined, left to right: those that share
    most of their columns, and a piece too short to be a digit with any piece whose columns it
    shares (the bar of a 5 reaches past its body)."""
    groups = sorted(pieces, key=lambda piece: piece.box.left)
    too_short = DIGIT_HEIGHT * max(piece.box.height for piece in groups)
    joined = True
    while joined:
        joined = False
        for (first, a), (second, b) in itertools.combinations(enumerate(groups), 2):
            overlap = min(a.box.right, b.box.right) - max(a.box.left, b.box.left)
            gap = max(a.box.top, b.box.top) - min(a.box.bottom, b.box.bottom)
            shares = (overlap >= STACKED * min(a.box.width, b.box.width)
                      or (overlap > 0 and min(a.box.height, b.box.height) < too_short))
            if shares and gap <= max(a.box.height, b.box.height):
                groups[first] = a.joined(b)
                del groups[second]
                joined = True
                break
    return sorted(groups, key=lambda group: group.box.left)
