"""`python predict.py ckpt_path=<file> inputs=...`, as a user runs it (the model: the tiny run's)."""

import json
import re

import numpy as np
import pytest
from conftest import draw_digit, mnist_like, run_script
from PIL import Image

from mnist_cnn.synthetic_photos import photo_of_number

# "path: 7  (7: 91.0%, 1: 5.2%, 2: 1.1%)"
PREDICTION = re.compile(r"^(?P<file>.+): (?P<label>\d)  \((?P<top>(\d: [\d.]+%(, )?){3})\)$")


def best_checkpoint(finished_run):
    return finished_run[0] / "checkpoints" / "best.ckpt"


@pytest.mark.slow
def test_each_image_is_predicted_and_each_bad_file_gets_its_own_error(finished_run, tmp_path):
    seven = draw_digit(tmp_path / "seven.png", 7)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    missing = tmp_path / "missing.png"
    before = set(tmp_path.iterdir())
    result = run_script("predict.py", f"ckpt_path={best_checkpoint(finished_run)}",
                        f"inputs=[{notes},{seven},{missing}]", cwd=tmp_path)
    assert result.returncode == 1  # some files failed
    [line] = result.stdout.strip().splitlines()
    match = PREDICTION.match(line)
    assert match and match["file"] == str(seven), line
    top = [(int(label), float(p)) for label, p in re.findall(r"(\d): ([\d.]+)%", match["top"])]
    assert top[0][0] == int(match["label"]) and [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert len({label for label, _ in top}) == 3 and sum(p for _, p in top) <= 100.05
    assert result.stderr.strip().splitlines() == [
        f"error: {notes}: not an image file that Pillow can read",
        f"error: {missing}: no such file",
    ]
    # no run folder, no log file: only the figure of what was read in the image it could read
    assert set(tmp_path.iterdir()) - before == {tmp_path / "figures"}
    assert [path.name for path in (tmp_path / "figures").iterdir()] == ["seven_read.png"]


@pytest.mark.slow
def test_json_lines_for_the_images_of_a_folder(finished_run, tmp_path):
    draw_digit(tmp_path / "a.png", 1)
    draw_digit(tmp_path / "b.jpg", 7, size=(64, 200))
    (tmp_path / "README.txt").write_text("a folder of digits")  # not an image extension: skipped
    result = run_script("predict.py", f"ckpt_path={best_checkpoint(finished_run)}", f"inputs={tmp_path}",
                        "json=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [record["file"] for record in records] == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    for record in records:
        probabilities = [entry["probability"] for entry in record["top3"]]
        assert record["label"] == record["top3"][0]["label"] and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-5


@pytest.mark.slow
def test_unreadable_checkpoint_is_one_clear_error(tmp_path):
    draw_digit(tmp_path / "seven.png", 7)
    result = run_script("predict.py", f"ckpt_path={tmp_path / 'seven.png'}", f"inputs={tmp_path}", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        (f"error: cannot load checkpoint {tmp_path / 'seven.png'}: it is not a checkpoint written by train.py "
         "(UnpicklingError: Weights only load failed)")
    ]


@pytest.mark.slow
def test_a_photo_of_a_number_is_read_digit_by_digit_with_a_figure_of_what_was_found(finished_run, tmp_path):
    photo = photo_of_number([mnist_like(digit) for digit in (2, 0, 4, 1)], np.random.default_rng(1), ruled=True)
    photo.image.save(tmp_path / "year.jpg")
    checkpoint = f"ckpt_path={best_checkpoint(finished_run)}"

    text = run_script("predict.py", checkpoint, "inputs=year.jpg", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    line = text.stdout.strip()
    assert re.fullmatch(r"year\.jpg: \d{4}  \((\d: [\d.]+%, ){3}\d: [\d.]+%\)", line), line
    number = line.split()[1]
    assert re.findall(r"(\d): [\d.]+%", line) == list(number)  # each digit with its own confidence
    with Image.open(tmp_path / "figures" / "year_read.png") as figure:
        assert figure.width > 400 and figure.height > 400

    records = run_script("predict.py", checkpoint, "inputs=year.jpg", "json=true", "figures_dir=null", cwd=tmp_path)
    assert records.returncode == 0, records.stderr
    digits = [json.loads(line) for line in records.stdout.splitlines()]
    assert [(record["position"], record["of"]) for record in digits] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "".join(record["class"] for record in digits) == number
    for record, (row, column) in zip(digits, photo.centres):  # each box, in the photo's pixels, around its digit
        box = record["box"]
        assert box["left"] <= column < box["right"] and box["top"] <= row < box["bottom"]


@pytest.mark.slow
def test_a_photo_of_a_blank_page_is_reported_not_guessed(finished_run, tmp_path):
    photo_of_number([], np.random.default_rng(0), ruled=True).image.save(tmp_path / "blank.jpg")
    draw_digit(tmp_path / "seven.png", 7)
    result = run_script("predict.py", f"ckpt_path={best_checkpoint(finished_run)}", "inputs=[blank.jpg,seven.png]",
                        "figures_dir=null", cwd=tmp_path)
    assert result.returncode == 1
    assert PREDICTION.match(result.stdout.strip()) and result.stdout.startswith("seven.png: ")
    assert result.stderr.strip().splitlines() == [
        "error: blank.jpg: no digit found: no ink stands out from the paper (a blank page?)"]
    assert not (tmp_path / "figures").exists()
