"""Matplotlib figures of predictions and errors, readable by a person.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot, so they
render headless (Agg) and leave no global state behind. Images are uint8 (N, 28, 28).
"""

import math

import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mnist_cnn.error_analysis.metrics import Reliability

WRONG = "tab:red"
RIGHT = "black"


# The grids are one mosaic image in one Axes (an Axes per image is far slower to draw).
# Sizes in mosaic pixels: an image, the space between columns, the caption room above.
CELL, GAP, CAPTION = 28, 4, 12
INCHES_PER_PIXEL = 0.045
TITLE_INCHES = 0.5


def image_grid(images: torch.Tensor, titles: list[str], colors: list[str], title: str) -> Figure:
    """Images in a near-square grid, each with its own (coloured) caption; red ones framed."""
    count = len(images)
    columns = math.ceil(math.sqrt(count)) if count else 1
    rows = max(1, math.ceil(count / columns))
    width, height = columns * (CELL + GAP), rows * (CELL + CAPTION) + GAP  # GAP: room for the last frames
    # at least 6 inches wide, so that the title fits above a grid of a few images
    figure_size = (max(6.0, width * INCHES_PER_PIXEL), height * INCHES_PER_PIXEL + TITLE_INCHES)
    figure = Figure(figsize=figure_size)
    figure.suptitle(title, fontsize=12)
    ax = figure.add_axes((0.0, 0.0, 1.0, 1.0 - TITLE_INCHES / figure_size[1]))
    ax.set_axis_off()
    mosaic = np.full((height, width), np.nan)  # NaN: blank paper between the images
    for index, (image, caption, color) in enumerate(zip(images, titles, colors)):
        row, column = divmod(index, columns)
        top, left = row * (CELL + CAPTION) + CAPTION, column * (CELL + GAP) + GAP // 2
        mosaic[top:top + CELL, left:left + CELL] = image.cpu().numpy()
        ax.text(left + CELL / 2, top - 1, caption, ha="center", va="bottom", fontsize=8, color=color)
        if color == WRONG:  # a red frame, visible even in a thumbnail
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), CELL, CELL, fill=False, edgecolor=WRONG, linewidth=2.5))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if not count:
        ax.text(width / 2, height / 2, "none", ha="center", va="center", fontsize=12)
    return figure


def training_samples(images: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> Figure:
    return image_grid(images, [class_names[label] for label in labels.tolist()], [RIGHT] * len(images),
                      "Training batch as the model sees it (augmented, if data.augment is set)")


def predictions(images: torch.Tensor, probabilities: torch.Tensor, labels: torch.Tensor,
                class_names: list[str]) -> Figure:
    """Predicted class and confidence per image; wrong ones in red, with the true class."""
    confidence, predicted = probabilities.max(dim=1)
    titles, colors = [], []
    for conf, pred, label in zip(confidence.tolist(), predicted.tolist(), labels.tolist()):
        if pred == label:
            titles.append(f"{class_names[pred]} ({conf:.0%})")
            colors.append(RIGHT)
        else:
            titles.append(f"{class_names[pred]} ({conf:.0%})\ntrue {class_names[label]}")
            colors.append(WRONG)
    return image_grid(images, titles, colors, "Test predictions: class (confidence); wrong in red")


def confident_mistakes(images: torch.Tensor, probabilities: torch.Tensor, labels: torch.Tensor,
                       class_names: list[str]) -> Figure:
    confidence, predicted = probabilities.max(dim=1)
    titles = [f"true {class_names[label]}\npred {class_names[pred]}\n{conf:.1%}"
              for conf, pred, label in zip(confidence.tolist(), predicted.tolist(), labels.tolist())]
    return image_grid(images, titles, [WRONG] * len(images),
                      "Most confident misclassifications: true, predicted, confidence")


def confusion_matrix(confusion: torch.Tensor, per_class_accuracy: torch.Tensor, class_names: list[str]) -> Figure:
    """Counts on a log colour scale (so rare confusions show), per-class accuracy on the right."""
    counts = confusion.cpu().numpy()
    classes = range(len(counts))
    total, correct = counts.sum(), np.trace(counts)
    figure = Figure(figsize=(8, 7.5), layout="constrained")
    ax = figure.subplots()
    shown = np.ma.masked_equal(counts, 0)  # empty cells stay white
    ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(2, counts.max())))
    for true, predicted in np.argwhere(counts > 0):
        value = counts[true, predicted]
        dark = value > math.sqrt(max(2, counts.max()))  # upper half of the log scale
        ax.text(predicted, true, str(value), ha="center", va="center", fontsize=8,
                color="white" if dark else ("black" if true == predicted else WRONG))
    ax.set_xticks(list(classes), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0, ha="right")
    ax.set_yticks(list(classes), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy_axis = ax.secondary_yaxis("right")
    accuracy_axis.set_yticks(list(classes), [f"{acc:.1%}" for acc in per_class_accuracy.tolist()])
    accuracy_axis.set_ylabel("per-class accuracy")
    ax.set_title(f"Confusion matrix: {total - correct} of {total} test images misclassified "
                 f"(accuracy {correct / max(total, 1):.2%})")
    return figure


def confidence_histogram(probabilities: torch.Tensor, labels: torch.Tensor) -> Figure:
    confidence, predicted = probabilities.max(dim=1)
    correct = predicted == labels
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    bins = np.linspace(0, 1, 21)
    ax.hist(confidence[correct].cpu().numpy(), bins=bins, alpha=0.7, color="tab:blue",
            label=f"correct ({int(correct.sum())})")
    ax.hist(confidence[~correct].cpu().numpy(), bins=bins, alpha=0.7, color=WRONG,
            label=f"wrong ({int((~correct).sum())})")
    ax.set_yscale("log")  # the wrong predictions are few; a linear scale would hide them
    ax.set_ylim(bottom=0.5)  # a bin holding one image still shows
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (probability of the predicted label)")
    ax.set_ylabel("test images (log scale)")
    ax.set_title("Confidence of correct and wrong predictions")
    ax.legend(loc="upper left")
    return figure


def reliability_diagram(bins: Reliability) -> Figure:
    edges = bins.edges.numpy()
    width = np.diff(edges)
    occupied = (bins.counts > 0).cpu().numpy()
    figure = Figure(figsize=(6, 6), layout="constrained")
    ax = figure.subplots()
    ax.bar(edges[:-1][occupied], bins.accuracy.cpu().numpy()[occupied], width=width[occupied],
           align="edge", color="tab:blue", edgecolor="black", label="accuracy in bin")
    # hatched, not filled: the gap may lie inside the accuracy bar (an underconfident bin)
    ax.bar(edges[:-1][occupied], (bins.confidence - bins.accuracy).cpu().numpy()[occupied],
           bottom=bins.accuracy.cpu().numpy()[occupied], width=width[occupied], align="edge",
           fill=False, hatch="//", edgecolor=WRONG, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (probability of the predicted label)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram: ECE {bins.ece:.2%}")
    ax.legend(loc="upper left")
    return figure
