"""User images become MNIST-like digits: white on black, in a 20x20 box, centred by mass; a
photo's lighting is taken out, and a number becomes its digits."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw_digit, mnist_like
from PIL import Image, ImageDraw

from mnist_cnn.digit_images import (
    BOX,
    MAX_SIDE,
    THINNEST_STROKE,
    DigitImageError,
    read_image,
    stroke_width,
)
from mnist_cnn.synthetic_photos import photo_of_number


def read_digit(path) -> torch.Tensor:
    """The one digit found in the image file at `path`."""
    [digit] = read_image(path).items
    return digit


def ink_box(digit: torch.Tensor) -> tuple[int, int]:
    """Height and width of the bounding box of the clearly inked pixels."""
    rows, columns = (digit > 64).nonzero(as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(columns.max() - columns.min() + 1)


def centre_of_mass(digit: torch.Tensor) -> tuple[float, float]:
    rows, columns = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = digit.float()
    return float((rows * mass).sum() / mass.sum()), float((columns * mass).sum() / mass.sum())


def test_dark_digit_on_white_paper_becomes_white_on_black_28x28(tmp_path):
    digit = read_digit(draw_digit(tmp_path / "seven.png", 7))
    assert digit.shape == (28, 28) and digit.dtype == torch.uint8
    assert digit.max() == 255
    border = torch.cat([digit[0], digit[-1], digit[:, 0], digit[:, -1]])
    assert (digit[:, :2] == 0).all() and (digit[:, -2:] == 0).all() and border.float().mean() < 30


def test_digit_is_scaled_into_the_20_pixel_box_keeping_its_aspect_ratio(tmp_path):
    image = Image.new("L", (300, 200), "white")
    ImageDraw.Draw(image).rectangle([50, 60, 169, 89], fill="black")  # a bar 120 wide, 30 high
    image.save(tmp_path / "bar.png")
    height, width = ink_box(read_digit(tmp_path / "bar.png"))
    assert width == BOX and height == pytest.approx(BOX * 30 / 120, abs=1)


def test_centre_of_mass_lands_in_the_middle_wherever_the_digit_was(tmp_path):
    image = Image.new("L", (400, 300), "white")
    ImageDraw.Draw(image).line([(20, 20), (90, 20), (40, 110)], fill="black", width=14)  # a 7 in a corner
    image.save(tmp_path / "corner.png")
    row, column = centre_of_mass(read_digit(tmp_path / "corner.png"))
    assert row == pytest.approx(13.5, abs=1) and column == pytest.approx(13.5, abs=1)


def test_light_digit_on_dark_background_matches_the_dark_on_light_one(tmp_path):
    dark_on_light = read_digit(draw_digit(tmp_path / "a.png", 1))
    light_on_dark = read_digit(draw_digit(tmp_path / "b.png", 1, ink="white", paper="black"))
    assert torch.equal(dark_on_light, light_on_dark)


def test_transparent_background_counts_as_paper(tmp_path):
    on_paper = read_digit(draw_digit(tmp_path / "paper.png", 7))
    transparent = read_digit(draw_digit(tmp_path / "clear.png", 7, ink=(0, 0, 0, 255), paper=(0, 0, 0, 0),
                                        mode="RGBA"))
    assert torch.equal(on_paper, transparent)


def test_16_bit_grayscale_png_reads_like_the_8_bit_one(tmp_path):
    eight_bit = draw_digit(tmp_path / "8bit.png", 7, ink=40, paper=220, mode="L")  # pencil on paper, say
    with Image.open(eight_bit) as image:
        pixels = np.asarray(image, dtype=np.uint16) * 257  # 0..255 -> 0..65535
    Image.fromarray(pixels).save(tmp_path / "16bit.png")
    with Image.open(tmp_path / "16bit.png") as image:
        assert image.mode.startswith("I")  # Pillow reads it as 16 or 32-bit integers, not "L"

    assert torch.equal(read_digit(tmp_path / "16bit.png"), read_digit(eight_bit))


def test_any_pillow_format_and_odd_size_is_read(tmp_path):
    digit = read_digit(draw_digit(tmp_path / "one.jpg", 1, size=(301, 77)))
    height, width = ink_box(digit)
    assert height == BOX and width < height  # a "1" stays tall and thin


def text_file(path):
    path.write_text("shopping list")


def truncated_png(path):
    draw_digit(path, 7)
    path.write_bytes(path.read_bytes()[:200])


def blank_image(path):
    Image.new("L", (50, 50), "white").save(path)


def no_file(path):
    pass


@pytest.mark.parametrize("make_file, message", [
    (text_file, "not an image"), (truncated_png, "unreadable image"), (no_file, "no such file"),
    (blank_image, "no digit found"),
])
def test_bad_files_are_rejected_with_a_clear_reason(tmp_path, make_file, message):
    path = tmp_path / "digit.png"
    make_file(path)
    with pytest.raises(DigitImageError, match=message):
        read_digit(path)


def similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Correlation of two images' pixels: 1 for the same picture."""
    return float(torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1])


def scanned(digit: torch.Tensor, path) -> Path:
    """`digit` (28x28) as a clean, sharp image file: six times larger, white on black."""
    Image.fromarray(digit.numpy()).resize((168, 168), Image.Resampling.BICUBIC).save(path)
    return path


@pytest.mark.parametrize("seed", range(6))
def test_a_photographed_digit_is_read_as_the_digit_itself_would_be(tmp_path, seed):
    """Gray paper, a lighting gradient, noise, blur, JPEG, a turn, sometimes ruled lines."""
    photo = photo_of_number([mnist_like(2)], np.random.default_rng(seed), ruled=seed % 2 == 1)
    photo.image.save(tmp_path / "photo.jpg")
    digit, clean = read_digit(tmp_path / "photo.jpg"), read_digit(scanned(mnist_like(2), tmp_path / "clean.png"))
    assert digit.max() == 255 and (digit[:, :2] == 0).all() and (digit[:, -2:] == 0).all()  # white on black
    row, column = centre_of_mass(digit)
    assert row == pytest.approx(13.5, abs=1) and column == pytest.approx(13.5, abs=1)
    assert similarity(digit, clean) > 0.75  # two different digits: about 0.5


def test_a_number_is_read_as_its_digits_left_to_right(tmp_path):
    written = (4, 1, 7, 2)
    photo = photo_of_number([mnist_like(digit) for digit in written], np.random.default_rng(3), ruled=True)
    photo.image.save(tmp_path / "number.jpg")
    reading = read_image(tmp_path / "number.jpg")
    assert len(reading.items) == 4 and [box.left for box in reading.boxes] == sorted(box.left for box in reading.boxes)
    for digit, written_digit in zip(reading.items, written):
        assert similarity(digit, read_digit(scanned(mnist_like(written_digit), tmp_path / "clean.png"))) > 0.75


@pytest.mark.parametrize("seed", range(8))
def test_a_photo_of_a_blank_page_is_one_clear_error(tmp_path, seed):
    """Lighting, shadow, noise and ruled lines, but no ink: nothing to guess."""
    photo = photo_of_number([], np.random.default_rng(seed), ruled=seed % 2 == 0)
    photo.image.save(tmp_path / "blank.jpg")
    with pytest.raises(DigitImageError, match="no digit found: no ink stands out from the paper"):
        read_image(tmp_path / "blank.jpg")


def test_a_large_photo_is_read_scaled_down_and_its_boxes_are_scaled_with_it(tmp_path):
    draw_digit(tmp_path / "large.png", 7, size=(4000, 3000))
    reading = read_image(tmp_path / "large.png")
    assert max(reading.page.shape) == MAX_SIDE and reading.scale == pytest.approx(MAX_SIDE / 4000)


def test_a_digit_written_with_a_fine_pen_gets_strokes_as_wide_as_mnists(tmp_path):
    image = Image.new("L", (1500, 1000), "white")
    ImageDraw.Draw(image).line([(x * 8, y * 8) for x, y in ((30, 15), (95, 15), (50, 85))], fill="black", width=6)
    image.save(tmp_path / "fine_pen.png")  # a 7 about 560 pixels tall, its strokes 6 wide
    [digit] = read_image(tmp_path / "fine_pen.png").items
    assert stroke_width(digit.numpy() > 127) >= THINNEST_STROKE  # unwidened: about 0.2 pixels
