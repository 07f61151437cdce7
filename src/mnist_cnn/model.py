"""The convolutional network: a stack of conv blocks and a linear classifier."""

from collections.abc import Sequence

import torch
from torch import nn

IMAGE_SIZE = 28


class CNN(nn.Module):
    """One block per entry of `channels` (conv, 2x2 max-pool, optional batch norm, ReLU),
    then optional dropout and a Linear layer to the classes.

    `convs_per_block` > 1 puts that many convolutions (each but the last followed by its own
    batch norm and ReLU) before a block's pooling; `global_pool` averages each channel over
    the last block's image, so the Linear layer sees one value per channel. `hidden_units`
    puts a hidden Linear layer of that width (with ReLU, then the dropout) before the last one:
    capacity that costs little compute next to the convolutions.

    `channels_last` and `compile` change how the net runs, never what it computes.
    """

    def __init__(self, channels: Sequence[int] = (32, 64), kernel_size: int = 3,
                 num_classes: int = 10, dropout: float = 0.0, batch_norm: bool = False,
                 channels_last: bool = True, compile: bool = False, convs_per_block: int = 1,
                 global_pool: bool = False, hidden_units: int | None = None):
        super().__init__()
        # Each setting was checked against its range before any config builds a net (mnist_cnn.schema).
        blocks, in_channels, size = [], 1, IMAGE_SIZE
        for width in channels:
            # "same" padding keeps the size, so only the pooling shrinks the image
            for _ in range(convs_per_block - 1):
                blocks += [
                    nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2, bias=not batch_norm),
                    nn.BatchNorm2d(width) if batch_norm else nn.Identity(),
                    nn.ReLU(inplace=True),
                ]
                in_channels = width
            blocks += [
                nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2, bias=not batch_norm),
                # Pooling before the ReLU computes exactly what the textbook order does (the
                # ReLU is monotonic, so it commutes with max), on a quarter of the values.
                nn.MaxPool2d(2),
                # Batch norm after the pooling normalises a quarter of the values too: not the
                # same function as before it, as good a net, and faster to train.
                nn.BatchNorm2d(width) if batch_norm else nn.Identity(),
                nn.ReLU(inplace=True),
            ]
            in_channels, size = width, size // 2
        if global_pool:  # parameter-free: the Linear layer keeps its checkpoint key
            blocks.append(nn.AdaptiveAvgPool2d(1))
            size = 1
        self.features = nn.Sequential(*blocks)
        dropout_layer = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if hidden_units is None:  # the classic head: its Linear layer keeps its checkpoint key
            head = [dropout_layer, nn.Linear(in_channels * size * size, num_classes)]
        else:
            head = [nn.Linear(in_channels * size * size, hidden_units), nn.ReLU(inplace=True), dropout_layer,
                    nn.Linear(hidden_units, num_classes)]
        self.classifier = nn.Sequential(nn.Flatten(), *head)
        # oneDNN's convolutions run fastest on NHWC tensors; Flatten still reads NCHW order,
        # so the Linear layer's weights mean the same in both formats.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)
        if compile:
            self.compile()  # in place: the state_dict keeps its keys, checkpoints stay interchangeable

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) normalised images -> (N, num_classes) logits."""
        return self.classifier(self.features(images.contiguous(memory_format=self.memory_format)))
