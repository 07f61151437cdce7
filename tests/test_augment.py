"""On-device random affine augmentation of training batches."""

import lightning as L
import pytest
import torch
from conftest import TinyData, make_tiny_data, write_idx

from mnist_cnn.augment import RandomAffine
from mnist_cnn.classifier import Classifier
from mnist_cnn.data import MNISTDataModule, normalize, read_idx
from mnist_cnn.mnist_files import TRAIN_IMAGES

AFFINE = {"rotation_deg": 10, "translation": 0.1, "scale": 0.1, "horizontal_flip": True}


def digits(count: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (count, 28, 28), generator=torch.Generator().manual_seed(0)).to(torch.uint8)


class TrainingBatches(L.Callback):
    """Records each epoch's training batches as the model (and ErrorAnalysis) receives them,
    and the validation batches."""

    def __init__(self):
        self.train: dict[int, list[torch.Tensor]] = {}
        self.val: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.setdefault(trainer.current_epoch, []).append(batch[0].clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(batch[0].clone())


def fit(tiny_data, tmp_path, augment, max_epochs: int, accumulate_grad_batches: int = 1
        ) -> tuple[TrainingBatches, L.Trainer]:
    L.seed_everything(0)
    datamodule = MNISTDataModule(str(tiny_data.data_dir), batch_size=32, val_size=80, num_workers=0,
                                 seed=3, md5=tiny_data.md5, augment=augment, sources=())
    classifier = Classifier({"_target_": "mnist_cnn.model.CNN", "channels": [4], "num_classes": 10},
                            {"_target_": "torch.optim.Adam", "lr": 1e-3})
    recorder = TrainingBatches()
    trainer = L.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_train_batches=4, accumulate_grad_batches=accumulate_grad_batches,
                        default_root_dir=tmp_path, callbacks=[recorder])
    trainer.fit(classifier, datamodule=datamodule)
    return recorder, trainer


def test_augmentation_keeps_shape_and_device_and_moves_the_pixels():
    images = digits()
    augmented = RandomAffine(**AFFINE)(images, seed=1)
    assert augmented.shape == images.shape and augmented.device == images.device
    assert augmented.dtype == torch.float32 and augmented.min() >= 0 and augmented.max() <= 255
    assert (augmented - images.float()).abs().mean() > 10


def test_same_seed_gives_the_same_augmented_batch_and_another_seed_another():
    affine = RandomAffine(**AFFINE)
    assert torch.equal(affine(digits(), seed=7), affine(digits(), seed=7))
    assert not torch.equal(affine(digits(), seed=7), affine(digits(), seed=8))


def test_zero_ranges_leave_the_images_as_they_are():
    images = digits()
    still = RandomAffine(rotation_deg=0, translation=0, scale=0, horizontal_flip=False)(images, seed=1)
    assert torch.allclose(still, images.float(), atol=1e-3)


def test_a_flip_mirrors_left_and_right():
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, :, :5] = 255  # a bar on the left edge
    flips = RandomAffine(rotation_deg=0, translation=0, scale=0, horizontal_flip=True)
    mirrored = [flips(image, seed) for seed in range(8)]
    assert any(torch.allclose(m, image.flip(-1).float(), atol=1e-3) for m in mirrored)
    assert any(torch.allclose(m, image.float(), atol=1e-3) for m in mirrored)


def shifted(image: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """The image moved by whole pixels, the uncovered border black."""
    moved = torch.zeros(image.shape)
    height, width = image.shape
    moved[max(down, 0):height + min(down, 0), max(right, 0):width + min(right, 0)] = \
        image[max(-down, 0):height + min(-down, 0), max(-right, 0):width + min(-right, 0)].float()
    return moved


def test_nearest_shifts_move_whole_pixels_like_a_random_crop():
    images = digits(32)
    crops = RandomAffine(rotation_deg=0, translation=0.1, scale=0, horizontal_flip=False,
                         interpolation="nearest")(images, seed=5)
    reach = range(-3, 4)  # 10% of 28 pixels, rounded to whole pixels
    moves = [next(((down, right) for down in reach for right in reach
                   if torch.equal(crop, shifted(image, down, right))), None)
             for crop, image in zip(crops, images)]
    assert None not in moves, "every image is its original moved by whole pixels, no pixel blended"
    assert len(set(moves)) > 5, "the shifts differ from image to image"
    blurred = RandomAffine(rotation_deg=0, translation=0.1, scale=0, horizontal_flip=False)(images, seed=5)
    assert not torch.equal(blurred, crops), "bilinear shifts by fractions of a pixel blend neighbours"


def test_training_batches_are_augmented_and_validation_batches_never(tiny_data, tmp_path):
    plain, _ = fit(tiny_data, tmp_path, augment=None, max_epochs=1)
    augmented, _ = fit(tiny_data, tmp_path, augment=RandomAffine(**AFFINE), max_epochs=1)
    for before, after in zip(plain.train[0], augmented.train[0]):
        assert after.shape == before.shape and after.dtype == before.dtype == torch.float32
        assert not torch.allclose(after, before)
    assert all(torch.equal(a, b) for a, b in zip(plain.val, augmented.val, strict=True))


def test_without_augmentation_training_batches_are_the_normalised_pixels_bit_for_bit(tiny_data, tmp_path):
    recorded, trainer = fit(tiny_data, tmp_path, augment=None, max_epochs=1)
    datamodule = trainer.datamodule
    order = list(datamodule.train_dataloader().sampler)
    for indices, seen in zip(order, recorded.train[0], strict=False):
        assert torch.equal(seen, normalize(datamodule.splits["train"].images[indices]))


@pytest.fixture
def one_image_data(tmp_path) -> TinyData:
    """Tiny data whose training images are all one image: batches differ only by their augmentation."""
    data = make_tiny_data(tmp_path / "one_image")
    raw_dir = data.data_dir / "MNIST" / "raw"
    images = read_idx(raw_dir / TRAIN_IMAGES)
    data.md5[TRAIN_IMAGES] = write_idx(raw_dir / TRAIN_IMAGES, images[:1].expand_as(images))
    return data


def test_every_batch_draws_its_own_augmentation_also_when_gradients_accumulate(one_image_data, tmp_path):
    # Two batches share each optimizer step here: each must still be augmented in its own way.
    recorded, _ = fit(one_image_data, tmp_path, RandomAffine(**AFFINE), max_epochs=2, accumulate_grad_batches=2)
    batches = [batch for epoch in (0, 1) for batch in recorded.train[epoch]]
    assert len(batches) == 8
    assert all(not torch.equal(a, b) for i, a in enumerate(batches) for b in batches[i + 1:])
