"""The ink on a photographed page: measured against the paper around it, whatever the light."""

import numpy as np
import pytest

from mnist_cnn.photo_ink import (
    MIN_CONTRAST,
    ink_is_darker,
    ink_mask,
    ink_of,
    otsu_threshold,
)


def page(height: int = 120, width: int = 300, paper: float = 0.9, ink: float = 0.15,
         darkest_light: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """A sheet lit from the left (full light) to the right (`darkest_light` of it), with a short
    vertical stroke every 50 columns; returns the photo and the strokes' mask."""
    strokes = np.zeros((height, width), dtype=bool)
    for column in range(25, width, 50):
        strokes[30:90, column:column + 4] = True
    light = np.linspace(1, darkest_light, width, dtype=np.float32)[None, :]
    return (np.where(strokes, ink, paper) * light).astype(np.float32), strokes


def test_ink_is_the_same_in_the_bright_and_the_dim_part_of_the_page_and_the_paper_has_none():
    photo, strokes = page()
    ink = ink_of(photo)
    assert ink[strokes].min() > 0.7  # 1 - 0.15 / 0.9 = 0.83 wherever the light falls
    assert ink[~strokes].max() < MIN_CONTRAST
    assert np.array_equal(ink_mask(ink), strokes)


@pytest.mark.parametrize("darkest_light", [1.0, 0.5, 0.25])
def test_dark_ink_is_told_from_light_ink_however_uneven_the_light(darkest_light):
    photo, _ = page(darkest_light=darkest_light)
    assert ink_is_darker(photo)
    chalk, _ = page(paper=0.1, ink=0.9, darkest_light=darkest_light)  # chalk on a blackboard
    assert not ink_is_darker(chalk)


def test_light_ink_on_an_evenly_lit_dark_ground_is_found_whole():
    chalk, strokes = page(paper=0.1, ink=0.9, darkest_light=1.0)
    assert np.array_equal(ink_mask(ink_of(chalk)), strokes)


def test_a_flat_page_has_no_ink():
    rng = np.random.default_rng(0)
    noisy_paper = (0.8 + rng.normal(0, 0.02, size=(100, 100))).astype(np.float32)
    assert not ink_mask(ink_of(noisy_paper)).any()


def test_otsu_splits_two_levels_between_them():
    values = np.concatenate([np.full(900, 0.05), np.full(100, 0.8)])
    assert 0.05 < otsu_threshold(values) <= 0.8


def test_faint_ink_joined_to_a_stroke_is_kept_whole_or_only_near_it_in_a_photo():
    """A stroke (contrast 0.9) with a fainter, thin line (0.5) running off it for 40 pixels."""
    ink = np.zeros((40, 80), dtype=np.float32)
    ink[5:35, 10:15] = 0.9
    ink[20:22, 15:55] = 0.5
    whole, near = ink_mask(ink), ink_mask(ink, reach=2)
    assert whole[20:22, 15:55].all()  # a scan: the faint ink belongs to the stroke
    assert near[20:22, 15:17].all() and not near[20:22, 18:55].any()  # a photo: the line stays out
    assert whole[5:35, 10:15].all() and near[5:35, 10:15].all()
