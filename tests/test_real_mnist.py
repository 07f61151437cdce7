"""On the real MNIST files (fetched once into the project's data/ folder): two epochs of
training, shared by every test here through the session's `real_mnist_run`."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw_digit, only_run_dir, run_script

from mnist_cnn.classifier import load_classifier
from mnist_cnn.data import TEST_IMAGES, TEST_LABELS, read_idx
from mnist_cnn.export import from_checkpoint, write
from mnist_cnn.predict import probabilities_of
from mnist_cnn.synthetic_photos import photo_of_number

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_two_epochs_on_real_mnist_reach_98_percent(real_mnist_run):
    metrics = json.loads((real_mnist_run / "metrics.json").read_text())
    assert metrics["test_images"] == 10_000
    assert metrics["test/acc"] >= 0.98


def test_error_analysis_of_real_mnist_names_its_mistakes_and_is_well_calibrated(real_mnist_run):
    metrics = json.loads((real_mnist_run / "metrics.json").read_text())
    assert metrics["test/misclassified"] == round((1 - metrics["test/acc"]) * 10_000)
    assert metrics["test/ece"] < 0.05  # a cross-entropy-trained CNN is nearly calibrated
    assert min(metrics["test/per_class_acc"]) > 0.9
    assert len(metrics["test/top_confusions"]) == 10 and metrics["test/top_confusions"][0]["count"] >= 2


def test_predict_reads_a_one_and_a_seven_drawn_on_white_paper_at_an_odd_size(real_mnist_run, tmp_path):
    one = draw_digit(tmp_path / "one.png", 1, size=(123, 97))
    seven = draw_digit(tmp_path / "seven.jpg", 7, size=(123, 97))
    result = run_script("predict.py", f"ckpt_path={real_mnist_run / 'checkpoints' / 'best.ckpt'}",
                        f"inputs=[{one},{seven}]", "json=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    labels = {json.loads(line)["file"]: json.loads(line)["label"] for line in result.stdout.splitlines()}
    assert labels == {str(one): 1, str(seven): 7}


def test_predict_reads_photos_of_test_digits_as_it_reads_the_digits_themselves(real_mnist_run, real_mnist_dir,
                                                                              tmp_path):
    """A photographed digit and a photographed 4-digit number, against the clean test images."""
    checkpoint = real_mnist_run / "checkpoints" / "best.ckpt"
    test_images = read_idx(real_mnist_dir / TEST_IMAGES)
    written = {"digit.jpg": [4], "number.jpg": [0, 1, 2, 3]}  # indices into the test set
    rng = np.random.default_rng(0)
    for name, indices in written.items():
        photo_of_number([test_images[index] for index in indices], rng, ruled=True).image.save(tmp_path / name)
    result = run_script("predict.py", f"ckpt_path={checkpoint}", "inputs=[digit.jpg,number.jpg]", "json=true",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    read = {}
    for record in map(json.loads, result.stdout.splitlines()):
        read.setdefault(record["file"], []).append(record["label"])
    classifier = load_classifier(checkpoint)
    assert read == {name: probabilities_of(classifier, test_images[indices]).argmax(dim=1).tolist()
                    for name, indices in written.items()}


def test_the_photo_benchmark_reports_the_clean_accuracy_that_training_measured(real_mnist_run, real_mnist_dir):
    checkpoint = real_mnist_run / "checkpoints" / "best.ckpt"
    result = run_script("scripts/benchmark_photos.py", f"--checkpoint=two_epochs={checkpoint}", "--singles=30",
                        "--numbers=10", f"--data-dir={real_mnist_dir.parent.parent}")
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| two_epochs |")]
    clean, *photos = [float(cell.rstrip("%")) / 100 for cell in row.strip(" |").split(" | ")[1:]]
    tested = json.loads((real_mnist_run / "metrics.json").read_text())["test/acc"]
    assert clean == pytest.approx(tested, abs=1e-4)  # the same 10,000 test images, the same model
    assert len(photos) == 5 and all(0.5 < accuracy <= 1 for accuracy in photos)


def test_the_exported_onnx_file_scores_eval_pys_test_accuracy(real_mnist_run, real_mnist_dir, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    checkpoint = Path(shutil.copy(real_mnist_run / "checkpoints" / "best.ckpt", tmp_path / "best.ckpt"))
    write(from_checkpoint(checkpoint), "onnx", tmp_path / "best.onnx")
    evaluated = run_script("eval.py", f"ckpt_path={checkpoint}", f"log_dir={tmp_path / 'logs'}",
                           "trainer.enable_progress_bar=false", timeout_s=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    tested = json.loads((only_run_dir(tmp_path / "logs", "evals") / "metrics.json").read_text())["test/acc"]

    session = onnxruntime.InferenceSession(str(tmp_path / "best.onnx"), providers=["CPUExecutionProvider"])
    images, labels = read_idx(real_mnist_dir / TEST_IMAGES), read_idx(real_mnist_dir / TEST_LABELS)
    predicted = torch.from_numpy(session.run(None, {"pixels": images.numpy()})[0]).argmax(dim=1)

    assert len(predicted) == 10_000
    assert (predicted == labels.long()).double().mean().item() == pytest.approx(tested, abs=1e-6)
