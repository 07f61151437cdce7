import lightning as L
import pytest
import torch
from lightning.pytorch.trainer.connectors.data_connector import _resolve_overfit_batches
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import CombinedLoader

from mnist_cnn.data import IndexBatches, MNISTDataModule, denormalize, normalize


@pytest.fixture
def datamodule(tiny_data) -> MNISTDataModule:
    module = MNISTDataModule(str(tiny_data.data_dir), batch_size=32, val_size=80, num_workers=0,
                             seed=0, md5=tiny_data.md5, sources=())
    module.prepare_data()
    module.setup("fit")
    return module


def test_setup_splits_train_into_train_and_validation(datamodule, tiny_data):
    sizes = {split: len(data) for split, data in datamodule.splits.items()}
    assert sizes == {"train": tiny_data.train_size - 80, "val": 80, "test": tiny_data.test_size}


def test_batches_are_uint8_slices_normalised_after_transfer(datamodule):
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (32, 28, 28)
    normalised, same_labels = datamodule.on_after_batch_transfer((images, labels), 0)
    assert normalised.shape == (32, 1, 28, 28) and normalised.dtype == torch.float32
    assert torch.allclose(normalised, normalize(images))
    assert same_labels.dtype == torch.int64


def test_normalize_maps_black_and_white_to_the_standardised_range():
    values = normalize(torch.tensor([[[0, 255]]], dtype=torch.uint8))
    assert values.flatten().tolist() == pytest.approx([-0.1307 / 0.3081, (1 - 0.1307) / 0.3081])


def test_split_depends_on_seed_only(tiny_data):
    def val_labels(seed):
        module = MNISTDataModule(str(tiny_data.data_dir), 32, 80, 0, seed, tiny_data.md5, sources=())
        module.setup("fit")
        return module.splits["val"].labels

    assert torch.equal(val_labels(0), val_labels(0))
    assert not torch.equal(val_labels(0), val_labels(1))


def test_training_order_is_reshuffled_every_epoch_and_reproducible():
    sampler = IndexBatches(100, batch_size=10, shuffle=True, seed=3)
    first = torch.cat(list(sampler))
    sampler.set_epoch(1)
    second = torch.cat(list(sampler))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(100))
    assert not torch.equal(first, second)
    sampler.set_epoch(0)
    assert torch.equal(torch.cat(list(sampler)), first)


def test_ranks_train_on_disjoint_equal_shards():
    shards = [torch.cat(list(IndexBatches(101, 8, True, seed=0, rank=r, world_size=2))) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 50
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_evaluation_deals_every_image_to_exactly_one_rank():
    samplers = [IndexBatches(101, 8, False, rank=r, world_size=2) for r in (0, 1)]
    seen = torch.cat([torch.cat(list(s)) for s in samplers])
    assert sorted(seen.tolist()) == list(range(101))
    assert [len(s) for s in samplers] == [7, 7]  # 51 and 50 images in batches of 8


def test_val_size_out_of_range_is_rejected(tiny_data):
    module = MNISTDataModule(str(tiny_data.data_dir), 32, tiny_data.train_size, 0, 0, tiny_data.md5, sources=())
    with pytest.raises(ValueError, match="data.val_size=400 must be between 1 and 399"):
        module.setup("fit")


def test_denormalize_recovers_the_uint8_pixels():
    pixels = torch.randint(0, 256, (5, 28, 28), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    assert torch.equal(denormalize(normalize(pixels)), pixels)


def test_loader_resumes_its_epoch_after_the_last_batch_it_handed_out(datamodule):
    first = datamodule.train_dataloader()
    first.sampler.set_epoch(1)
    epoch_one = [labels.tolist() for _, labels in first]
    stopped = datamodule.train_dataloader()
    stopped.sampler.set_epoch(1)
    batches = iter(stopped)
    for _ in range(3):
        next(batches)
    state = stopped.state_dict()

    resumed = datamodule.train_dataloader()
    resumed.load_state_dict(state)
    rest = iter(resumed)  # Lightning asks for the iterator before it sets the epoch
    resumed.sampler.set_epoch(1)

    assert state == {"epoch": 1, "batches_done": 3}
    assert [labels.tolist() for _, labels in rest] == epoch_one[3:]


def test_a_position_saved_at_the_end_of_an_epoch_starts_the_next_epoch_whole(datamodule):
    loader = datamodule.train_dataloader()
    loader.load_state_dict({"epoch": 1, "batches_done": len(loader)})
    loader.sampler.set_epoch(2)
    assert len(list(loader)) == len(loader)


@pytest.mark.parametrize("split", ["train", "val"])
def test_overfit_batches_keeps_whole_unshuffled_batches_through_lightnings_sampler_swap(datamodule, split):
    datamodule.trainer = L.Trainer(overfit_batches=2, accelerator="cpu", logger=False)
    loader = CombinedLoader(getattr(datamodule, f"{split}_dataloader")())
    _resolve_overfit_batches(loader, RunningStage.TRAINING)  # what Lightning does to a fitting loader
    images, labels = next(iter(loader.flattened[0]))
    assert images.shape == (32, 28, 28)
    assert torch.equal(labels, datamodule.splits[split].labels[:32])  # the split's first batch
