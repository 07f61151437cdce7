"""Another MNIST-format dataset through the same machinery: class names from the data config
into the checkpoint, figures, metrics.json and predict.py, and predict's preprocessing chosen
by the checkpoint's dataset. The tiny data has four classes: nothing may assume ten digits."""

import json

import pytest
import torch
from conftest import (
    TEST_FIGURES,
    assert_readable_pngs,
    make_tiny_data,
    only_run_dir,
    run_eval,
    run_script,
    run_train,
)
from PIL import Image, ImageDraw

from mnist_cnn.classifier import load_classifier
from mnist_cnn.data import normalize
from mnist_cnn.digit_images import grayscale, read_digits, read_product
from mnist_cnn.error_analysis import figures, metrics

CLASS_NAMES = ["T-shirt/top", "Trouser", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    """A tiny run on four-class data configured like Fashion-MNIST (data=fashion_mnist underneath)."""
    root = tmp_path_factory.mktemp("fashion")
    tiny = make_tiny_data(root, base="fashion_mnist", dataset="FashionMNIST", class_names=CLASS_NAMES)
    result = run_train(tiny, root / "logs", "model.channels=[8,16]", "optimizer.lr=0.003")
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run_dir(root / "logs")


def draw_bag(path, size=(90, 60)):
    """A dark bag on white paper: a filled body and a handle, wider than tall."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 25, 80, 55), fill="black")
    draw.arc((30, 5, 60, 40), 180, 360, fill="black", width=5)
    image.save(path)
    return path


def test_metrics_json_names_the_classes_of_the_data(fashion_run):
    run_dir = fashion_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/class_names"] == CLASS_NAMES
    assert torch.tensor(metrics["test/confusion_matrix"]).shape == (4, 4)
    assert len(metrics["test/per_class_acc"]) == 4
    for confusion in metrics["test/top_confusions"]:
        assert confusion["true_name"] == CLASS_NAMES[confusion["true"]]
        assert confusion["predicted_name"] == CLASS_NAMES[confusion["predicted"]]


def test_figures_are_drawn_for_the_data_classes(fashion_run):
    run_dir = fashion_run
    assert_readable_pngs(run_dir / "figures", TEST_FIGURES | {"train/samples"})


def test_the_checkpoint_carries_class_names_and_preprocessing_as_plain_values(fashion_run):
    run_dir = fashion_run
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["class_names"] == CLASS_NAMES
    assert checkpoint["hyper_parameters"]["preprocessing"] == "product"


@pytest.mark.slow
def test_predict_names_classes_and_prepares_images_as_the_checkpoint_dataset_did(fashion_run, tmp_path):
    run_dir = fashion_run
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    bag = draw_bag(tmp_path / "bag.png")
    result = run_script("predict.py", f"ckpt_path={ckpt}", f"inputs=[{bag}]", "json=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["class"] == CLASS_NAMES[record["label"]]
    assert [entry["class"] for entry in record["top3"]] == [CLASS_NAMES[e["label"]] for e in record["top3"]]

    classifier = load_classifier(ckpt).eval()
    with Image.open(bag) as image, torch.no_grad():
        as_product = classifier(normalize(read_product(grayscale(image)).items)).softmax(dim=1)[0]
        as_digit = classifier(normalize(read_digits(grayscale(image)).items)).softmax(dim=1)[0]
    printed = torch.tensor([entry["probability"] for entry in record["top3"]])
    labels = [entry["label"] for entry in record["top3"]]
    assert torch.allclose(printed, as_product[labels], atol=1e-5)
    assert not torch.allclose(as_product, as_digit, atol=1e-3)

    text = run_script("predict.py", f"ckpt_path={ckpt}", f"inputs=[{bag}]", cwd=tmp_path)
    assert text.stdout.startswith(f"{bag}: {record['class']}  ({record['class']}: ")


def test_product_preprocessing_fills_the_field_and_digit_preprocessing_a_20_pixel_box(tmp_path):
    with Image.open(draw_bag(tmp_path / "bag.png")) as image:
        [product], [digit] = read_product(grayscale(image)).items, read_digits(grayscale(image)).items

    def width(pixels):
        columns = (pixels > 0).any(dim=0).nonzero()
        return int(columns.max() - columns.min() + 1)
    assert width(product) == 28 and width(digit) == 20


@pytest.mark.slow
@pytest.mark.real_data
def test_one_epoch_on_real_fashion_mnist_is_far_above_chance(tmp_path):
    result = run_script("train.py", "data=fashion_mnist", f"log_dir={tmp_path}", "trainer=cpu",
                        "trainer.max_epochs=1", "trainer.enable_progress_bar=false", timeout_s=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["test_images"] == 10_000 and metrics["test/class_names"][9] == "Ankle boot"
    assert metrics["test/acc"] >= 0.8  # chance is 0.1


def test_eval_of_a_checkpoint_on_data_with_other_classes_is_one_clear_error(fashion_run, tiny_data, tmp_path):
    result = run_eval(tiny_data, tmp_path, fashion_run / "checkpoints" / "best.ckpt")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: the checkpoint's model tells apart ['T-shirt/top', 'Trouser', 'Bag', 'Ankle boot'], "
        "but the data config holds ['0', '1'")
    assert "e.g. data=fashion_mnist" in result.stderr


def test_figures_caption_images_and_label_axes_with_the_class_names():
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    probabilities = torch.tensor([[0.1, 0.7, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1]])
    labels = torch.tensor([1, 3])  # the second is an Ankle boot taken for a T-shirt/top
    captions = [text.get_text() for text in figures.predictions(images, probabilities, labels, CLASS_NAMES)
                .axes[0].texts]
    assert captions == ["Trouser (70%)", "T-shirt/top (60%)\ntrue Ankle boot"]
    samples = figures.training_samples(images, labels, CLASS_NAMES).axes[0].texts
    assert [text.get_text() for text in samples] == ["Trouser", "Ankle boot"]
    confusion = metrics.confusion_matrix(probabilities.argmax(dim=1), labels, num_classes=4)
    matrix = figures.confusion_matrix(confusion, metrics.per_class_accuracy(confusion), CLASS_NAMES).axes[0]
    assert [tick.get_text() for tick in matrix.get_xticklabels()] == CLASS_NAMES
    assert [tick.get_text() for tick in matrix.get_yticklabels()] == CLASS_NAMES
