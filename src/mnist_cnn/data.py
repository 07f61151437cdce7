"""MNIST as a LightningDataModule that serves whole batches by tensor indexing.

The dataset is 55 MB of uint8 pixels: it is loaded once into tensors, and a batch is
one indexing operation (no per-sample PIL transforms, which would dominate the run
time of a small CNN). Batches travel as uint8 and are normalised on the device.
With `on_device`, the whole dataset lives on the trainer's device (each DDP rank's own
GPU), so a batch is an indexing operation there and nothing is copied per batch.
"""

import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mnist_cnn.augment import RandomAffine, batch_seed
from mnist_cnn.mnist_files import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    MNISTFilesError,
    Source,
    ensure_mnist_files,
    raw_dir_of,
)
from mnist_cnn.schema import ConfigError

# Mean and standard deviation of the MNIST training pixels, scaled to [0, 1].
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (the MNIST format: big-endian header, then uint8 data)."""
    data = path.read_bytes()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise MNISTFilesError(f"{path} is not a uint8 IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    values = torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8)
    if values.numel() != torch.Size(shape).numel():
        raise MNISTFilesError(f"{path} holds {values.numel()} values, its header promises {shape}")
    return values.reshape(shape)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Pixels 0-255 (N, 28, 28), uint8 or float -> float (N, 1, 28, 28), standardised like the training set."""
    return (images.unsqueeze(1).float() / 255 - PIXEL_MEAN) / PIXEL_STD


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """The inverse of `normalize`: (N, 1, 28, 28) float -> uint8 (N, 28, 28), for display."""
    pixels = (images.squeeze(1) * PIXEL_STD + PIXEL_MEAN) * 255
    return pixels.round().clamp(0, 255).to(torch.uint8)


class TensorBatches(Dataset):
    """Images and labels held in tensors; indexing with a tensor of indices gives a batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[indices], self.labels[indices]


class IndexBatches(Sampler):
    """Batches of indices: reshuffled every epoch from `seed`, split across ranks.

    Training (`shuffle`) gives every rank the same number of images by dropping the
    remainder of the shuffled order; evaluation deals each image to exactly one rank.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start_batch = 0  # where the next pass over `epoch` begins; not 0 only when resuming mid-epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a resumed position belongs to the epoch it was saved in
            self.epoch, self.start_batch = epoch, 0

    def _indices_of_this_rank(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
            order = order[: self.size - self.size % self.world_size]
        else:
            order = torch.arange(self.size)
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator: the epoch's order is drawn at its first batch, after Lightning has called
        # set_epoch, even when (as on resuming) it asked for the iterator before.
        batches = self._indices_of_this_rank().split(self.batch_size)[self.start_batch:]
        self.start_batch = 0
        yield from batches

    def __len__(self) -> int:
        images = len(self._indices_of_this_rank())
        return math.ceil(images / self.batch_size)


class ResumableLoader(DataLoader):
    """A DataLoader over IndexBatches that knows how far the current epoch got.

    Lightning saves `state_dict()` in every checkpoint and hands it to `load_state_dict`
    before training resumes, so a resumed run goes on with the same epoch's order from the
    first batch it had not trained on. Batches are counted as they are handed to the
    trainer, not as the sampler yields them, so worker prefetching does not shift the count.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.position = {"epoch": 0, "batches_done": 0}

    def __iter__(self) -> Iterator:
        self.position = {"epoch": self.sampler.epoch, "batches_done": self.sampler.start_batch}
        for batch in super().__iter__():
            self.position["batches_done"] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return dict(self.position)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.epoch, self.sampler.start_batch = state["epoch"], state["batches_done"]


class FixedBatches(Dataset):
    """Whole batches as the items of a dataset, in a fixed order."""

    def __init__(self, split: TensorBatches, batches: list[torch.Tensor]):
        self.split, self.batches = split, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split[self.batches[index]]


class MNISTDataModule(L.LightningDataModule):
    """An MNIST-format dataset (MNIST, Fashion-MNIST): its four IDX files under
    <data_dir>/<dataset>/raw, fetched from `sources` when missing. `class_names` and
    `preprocessing` (how predict.py prepares an image file) travel into the checkpoint."""

    def __init__(self, data_dir: str, batch_size: int, val_size: int, num_workers: int,
                 seed: int, md5: Mapping[str, str], redownload: bool = False, on_device: bool = True,
                 augment: RandomAffine | None = None, dataset: str = "MNIST",
                 class_names: Sequence[str] = tuple("0123456789"), preprocessing: str = "digit",
                 *, sources: Sequence[Source]):
        super().__init__()
        self.data_dir, self.dataset = Path(data_dir), dataset
        self.class_names, self.preprocessing, self.sources = list(class_names), preprocessing, list(sources)
        self.batch_size, self.val_size, self.num_workers = batch_size, val_size, num_workers
        self.seed, self.md5, self.redownload, self.on_device = seed, dict(md5), redownload, on_device
        self.augment = augment
        self.splits: dict[str, TensorBatches] = {}
        self.train_loader: ResumableLoader | None = None
        self.restored_train_position: dict[str, int] | None = None

    def prepare_data(self) -> None:
        # Lightning calls this on one process per machine; the others wait for it.
        ensure_mnist_files(raw_dir_of(self.data_dir, self.dataset), self.md5, self.redownload,
                           {str(source): source for source in self.sources})

    def setup(self, stage: str) -> None:
        if self.splits:
            return
        raw_dir = raw_dir_of(self.data_dir, self.dataset)
        train_images, train_labels = read_idx(raw_dir / TRAIN_IMAGES), read_idx(raw_dir / TRAIN_LABELS)
        if not 0 < self.val_size < len(train_labels):
            raise ConfigError(
                f"data.val_size={self.val_size} must be between 1 and {len(train_labels) - 1} "
                f"(the training file holds {len(train_labels)} images)"
            )
        if self.batch_size > len(train_labels) - self.val_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the training split "
                f"({len(train_labels) - self.val_size} images): choose a smaller batch size"
            )
        order = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = order[: self.val_size], order[self.val_size:]
        test_images, test_labels = read_idx(raw_dir / TEST_IMAGES), read_idx(raw_dir / TEST_LABELS)
        device = self.trainer.strategy.root_device if self.on_device and self.trainer else torch.device("cpu")
        if device.type != "cpu" and self.num_workers > 0:
            raise ConfigError(
                f"data.on_device=true keeps the data on {device}, where worker processes cannot "
                f"index it: set data.num_workers=0 (got {self.num_workers}) or data.on_device=false"
            )
        self.splits = {
            split: TensorBatches(images.to(device), labels.long().to(device))
            for split, images, labels in [
                ("train", train_images[train_idx], train_labels[train_idx]),
                ("val", train_images[val_idx], train_labels[val_idx]),
                ("test", test_images, test_labels),
            ]
        }

    def _loader(self, split: str, shuffle: bool) -> ResumableLoader:
        trainer = self.trainer
        sampler = IndexBatches(
            len(self.splits[split]), self.batch_size, shuffle, self.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        # batch_size=None: the sampler already yields whole batches of indices.
        return ResumableLoader(self.splits[split], sampler=sampler, batch_size=None,
                               num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def _overfitting(self) -> bool:
        return bool(self.trainer and self.trainer.overfit_batches > 0)

    def _overfit_loader(self, split: str) -> DataLoader:
        """With trainer.overfit_batches, Lightning swaps every fitting loader's sampler for a
        SequentialSampler over its dataset. A dataset whose items are the unshuffled batches
        is already read that way, so the batches stay whole."""
        batches = list(self._loader(split, shuffle=False).sampler)
        return DataLoader(FixedBatches(self.splits[split], batches), batch_size=None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        if self._overfitting():
            return self._overfit_loader("train")
        self.train_loader = self._loader("train", shuffle=True)
        if self.restored_train_position:
            self.train_loader.load_state_dict(self.restored_train_position)
            self.restored_train_position = None
        return self.train_loader

    def val_dataloader(self) -> DataLoader:
        if self._overfitting():
            return self._overfit_loader("val")
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> ResumableLoader:
        return self._loader("test", shuffle=False)

    # Lightning restores a loader's state itself only if it first asks for the loader after
    # restoring the checkpoint, and sizing the learning-rate schedule (configure_optimizers reads
    # estimated_stepping_batches) asks before. The datamodule's state is restored earlier than
    # both, so the training position travels with it and goes into the loader when it is made.
    def state_dict(self) -> dict[str, dict[str, int]]:
        return {"train_position": self.train_loader.state_dict()} if self.train_loader else {}

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        self.restored_train_position = state.get("train_position")

    # Lightning calls this before on_train_batch_start: callbacks see the augmented batch.
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, torch.Tensor):  # the model summary's example input, already normalised
            return batch
        images, labels = batch
        trainer = self.trainer
        if self.augment is not None and trainer is not None and trainer.training:
            images = self.augment(images, batch_seed(self.seed, self._training_batch_number(), trainer.global_rank))
        return normalize(images), labels

    def _training_batch_number(self) -> int:
        """The number of the training batch just handed out, counted over the run's epochs.
        The loader's position is restored on resume, so a resumed run numbers its batches (and
        draws their augmentations) as the uninterrupted run did, whatever accumulate_grad_batches."""
        if self.train_loader is None:  # overfit_batches: the same few batches, numbered by step
            return self.trainer.global_step
        position = self.train_loader.position
        return position["epoch"] * len(self.train_loader) + position["batches_done"] - 1
