"""The figure predict.py writes for each image: what was found on it, and what the model saw.

Above, the image as it was read, with a numbered box around each digit found and its class
and confidence. Below, the 28x28 input the model saw for each box. A misread digit is
explained here: a stroke cut off, a speck taken for ink, two digits in one box.
"""

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mnist_cnn.digit_images import Reading


def reading_figure(reading: Reading, classes: list[str], confidences: list[float]) -> Figure:
    """`classes[i]` and `confidences[i]` are the model's answer for `reading.items[i]`."""
    count = len(reading.items)
    figure = Figure(figsize=(max(6.0, 1.3 * count), 6.5), layout="constrained")
    page_row, crops_row = figure.subfigures(2, 1, height_ratios=[3, 1])
    page = page_row.subplots()
    page.imshow(reading.page, cmap="gray", vmin=0, vmax=1)
    page.set_axis_off()
    page.set_title("read: " + "".join(classes) if all(len(name) == 1 for name in classes)
                   else "read: " + ", ".join(classes))
    for position, (box, name, confidence) in enumerate(zip(reading.boxes, classes, confidences), start=1):
        page.add_patch(Rectangle((box.left - 0.5, box.top - 0.5), box.width, box.height,
                                 fill=False, edgecolor="tab:red", linewidth=1.5))
        page.annotate(f"{position}: {name} {confidence:.0%}", (box.left, box.top), xytext=(0, 3),
                      textcoords="offset points", color="tab:red", fontsize=9, va="bottom")
    crops = crops_row.subplots(1, count, squeeze=False)[0]
    for position, (axes, item, name, confidence) in enumerate(
            zip(crops, reading.items, classes, confidences), start=1):
        axes.imshow(item.numpy(), cmap="gray", vmin=0, vmax=255)
        axes.set_title(f"{position}: {name} {confidence:.0%}", fontsize=9)
        axes.set_axis_off()
    crops_row.suptitle("what the model saw (28x28)", fontsize=9)
    return figure
