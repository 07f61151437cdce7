"""An ink mask becomes one mask per digit, left to right: pieces, ruled lines, specks, stacked strokes."""

import numpy as np
import pytest
from conftest import mnist_like
from PIL import Image, ImageDraw

from mnist_cnn.digit_images import grayscale
from mnist_cnn.digit_segmentation import connected_pieces, digits_in
from mnist_cnn.photo_ink import ink_mask, ink_of
from mnist_cnn.synthetic_photos import photo_of_number


def drawn(size: tuple[int, int], draw) -> np.ndarray:
    """A boolean mask of what `draw(ImageDraw)` draws in white on a black image of `size`."""
    image = Image.new("L", size, 0)
    draw(ImageDraw.Draw(image))
    return np.asarray(image) > 0


def test_pieces_touching_only_at_a_corner_are_one_and_separate_ones_are_not():
    mask = np.zeros((6, 8), dtype=bool)
    mask[0:2, 0:2] = True  # a square ...
    mask[2:4, 2:3] = True  # ... and a stroke touching its corner diagonally
    mask[0:5, 6] = True  # a separate bar
    pieces = connected_pieces(mask)
    assert sorted(int(piece.sum()) for piece in pieces) == [5, 6]
    assert np.array_equal(np.logical_or.reduce(pieces), mask)


def test_specks_are_left_out_of_the_pieces():
    mask = drawn((100, 60), lambda draw: (draw.ellipse((20, 20, 60, 80), outline=255, width=6),
                                          draw.point([(5, 5), (90, 50)], fill=255)))
    [ring] = connected_pieces(mask)
    assert not ring[5, 5] and not ring[50, 90] and ring.sum() == mask.sum() - 2


def test_a_number_is_cut_into_its_digits_left_to_right():
    mask = drawn((200, 60), lambda draw: [draw.line([(x, 10), (x + 10, 50)], fill=255, width=5)
                                          for x in (150, 20, 100, 60)])
    digits = digits_in(mask)
    assert [digit.box.left for digit in digits] == sorted(digit.box.left for digit in digits)
    assert len(digits) == 4 and np.array_equal(np.logical_or.reduce([digit.mask for digit in digits]), mask)


def test_a_stroke_apart_from_its_digit_above_it_is_joined_to_it_and_a_dash_is_dropped():
    def five_and_dash(draw):
        draw.line([(34, 10), (72, 10)], fill=255, width=5)  # the bar of a 5, reaching past and not touching ...
        draw.line([(22, 16), (20, 30), (40, 35), (40, 55), (18, 58)], fill=255, width=5)  # ... its body
        draw.line([(85, 35), (100, 35)], fill=255, width=5)  # a dash beside it
    [five] = digits_in(drawn((120, 70), five_and_dash))
    box = five.box
    assert box.top < 10 and box.bottom > 58 and 72 <= box.right < 85  # the bar is, the dash is not


def test_a_ruled_line_through_the_digits_is_cut_out_of_them():
    def digits_on_a_line(draw):
        draw.line([(0, 42), (299, 38)], fill=255, width=2)  # a slightly tilted ruled line
        for left in (40, 140, 220):
            draw.ellipse((left, 15, left + 40, 75), outline=255, width=6)  # three 0s across it
    digits = digits_in(drawn((300, 90), digits_on_a_line))
    assert len(digits) == 3
    for digit, left in zip(digits, (40, 140, 220)):
        box = digit.box
        assert left - 2 <= box.left and box.right <= left + 43  # none of the line outside the 0


@pytest.mark.parametrize("seed", range(6))
def test_a_photo_of_a_4_digit_number_gives_4_boxes_in_order_each_around_its_digit(seed):
    rng = np.random.default_rng(seed)
    photo = photo_of_number([mnist_like(digit) for digit in (2, 0, 4, 1)], rng, ruled=seed % 2 == 0)
    digits = digits_in(ink_mask(ink_of(grayscale(photo.image))))
    assert len(digits) == 4
    for digit, (row, column) in zip(digits, photo.centres):
        box = digit.box
        assert box.top <= row < box.bottom and box.left <= column < box.right
