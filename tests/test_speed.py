"""The speed switches change how the net runs, never what it predicts; the benchmark runs."""

import json
import subprocess
import sys
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import CONFIG_DIR, PROJECT_ROOT, import_script, learnable_digits
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from mnist_cnn.classifier import Classifier
from mnist_cnn.config import register_resolvers
from mnist_cnn.data import MNISTDataModule, normalize
from mnist_cnn.model import CNN

MODEL = {"_target_": "mnist_cnn.model.CNN", "channels": [8, 16], "num_classes": 10}
ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3}


@pytest.fixture(scope="module")
def fixed_batch() -> torch.Tensor:
    return normalize(learnable_digits(16, seed=3)[0])


def twin(reference: torch.nn.Module, **switches) -> CNN:
    """A CNN with the reference's weights and the given switches."""
    net = CNN(channels=[8, 16], **switches)
    net.load_state_dict(reference.state_dict())
    return net.eval()


def test_channels_last_runs_nhwc_and_gives_the_same_logits(fixed_batch):
    reference = CNN(channels=[8, 16], channels_last=False).eval()
    fast = twin(reference, channels_last=True)
    second_conv = 4  # conv, batch norm, pool, ReLU, conv: the first has a single input channel
    assert fast.features[second_conv].weight.is_contiguous(memory_format=torch.channels_last)
    assert not reference.features[second_conv].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(fast(fixed_batch), reference(fixed_batch), atol=1e-5)


@pytest.mark.slow
def test_compile_on_and_off_give_the_same_logits(fixed_batch):
    torch._dynamo.reset()
    reference = CNN(channels=[8, 16]).eval()
    compiled = twin(reference, compile=True)
    with torch.no_grad():
        logits = compiled(fixed_batch)
        assert torch.allclose(logits, reference(fixed_batch), atol=1e-5)
    # dynamo's own counter: the forward really went through a compiled graph
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1


# Five training steps of the classic net with batch norm, after three to warm up, in a new
# process: the allocator setting is process-wide and cannot be undone.
PAGE_FAULTS_PER_STEP = """
import resource, sys, torch, torch.nn.functional as F
from mnist_cnn.allocator import reuse_freed_memory
from mnist_cnn.model import CNN
assert sys.argv[1] == "default" or reuse_freed_memory()
net = CNN([32, 64], batch_norm=True, channels_last=True)
optimizer = torch.optim.Adam(net.parameters())
images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
for step in range(8):
    if step == 3:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    optimizer.zero_grad()
    F.cross_entropy(net(images), labels).backward()
    optimizer.step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def page_faults_per_step(mode: str) -> float:
    return float(subprocess.run([sys.executable, "-c", PAGE_FAULTS_PER_STEP, mode], check=True,
                                capture_output=True, text=True).stdout)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_reusing_freed_memory_spares_the_page_faults_of_fresh_buffers_every_step():
    # Whether glibc's own heuristics hand the buffers back varies from process to process:
    # the worst of up to five shows what the default costs.
    default = 0.0
    for _ in range(5):
        default = max(default, page_faults_per_step("default"))
        if default > 1000:  # thousands of 4 KiB pages faulted in afresh every step
            break
    reuse = page_faults_per_step("reuse")
    assert reuse < default / 3, {"default": default, "reuse": reuse}


def predictions(classifier: Classifier, images: torch.Tensor, precision: str) -> torch.Tensor:
    trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    return torch.cat(trainer.predict(classifier, DataLoader([images], batch_size=None)))


def test_bf16_mixed_precision_gives_the_same_predictions(fixed_batch):
    torch.manual_seed(0)
    classifier = Classifier(MODEL, ADAM)
    full = predictions(classifier, fixed_batch, "32-true")
    bf16 = predictions(classifier, fixed_batch, "bf16-mixed")
    assert not torch.equal(full, bf16)  # the option really changed the arithmetic
    assert torch.allclose(bf16.float(), full, atol=0.05, rtol=0.05)


class OnDevice(SimpleNamespace):
    """The part of a Trainer that MNISTDataModule reads: this rank's device, the ranks, overfitting."""

    def __init__(self, device: str):
        super().__init__(strategy=SimpleNamespace(root_device=torch.device(device)), global_rank=0, world_size=1,
                         overfit_batches=0)


def test_on_device_keeps_the_dataset_and_batches_on_the_trainers_device(tiny_data):
    # "meta" stands in for a GPU: tensors there have shapes but no storage, so any
    # batch served from host memory would arrive on "cpu" instead.
    datamodule = MNISTDataModule(str(tiny_data.data_dir), 32, 80, 0, 0, tiny_data.md5, on_device=True, sources=())
    datamodule.trainer = OnDevice("meta")
    datamodule.setup("fit")
    assert {split.images.device.type for split in datamodule.splits.values()} == {"meta"}
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.device.type == labels.device.type == "meta" and images.shape == (32, 28, 28)


def test_on_device_off_keeps_the_dataset_in_host_memory(tiny_data):
    datamodule = MNISTDataModule(str(tiny_data.data_dir), 32, 80, 0, 0, tiny_data.md5, on_device=False, sources=())
    datamodule.trainer = OnDevice("meta")
    datamodule.setup("fit")
    assert {split.images.device.type for split in datamodule.splits.values()} == {"cpu"}


def test_on_device_with_worker_processes_is_rejected_with_the_fix(tiny_data):
    datamodule = MNISTDataModule(str(tiny_data.data_dir), 32, 80, 2, 0, tiny_data.md5, on_device=True, sources=())
    datamodule.trainer = OnDevice("meta")
    with pytest.raises(ValueError, match="set data.num_workers=0 .* or data.on_device=false"):
        datamodule.setup("fit")


def test_fast_preset_validates_once_at_its_last_epoch_whatever_the_epochs():
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=fast", "trainer.max_epochs=3"])
    assert cfg.trainer.check_val_every_n_epoch == 3


@pytest.mark.parametrize("preset", [None, "fast", "best", "fashion"])
def test_the_benchmarks_textbook_net_is_each_presets_net(preset, fixed_batch):
    benchmark = import_script("benchmark")
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={preset}"] if preset else [])
    torch.manual_seed(0)
    project_net = instantiate(cfg.model).eval()
    textbook = benchmark.textbook_net(project_net, cfg.model).eval()
    assert torch.allclose(textbook(fixed_batch), project_net(fixed_batch), atol=1e-5)


@pytest.mark.slow
def test_benchmark_times_both_paths_and_the_fast_run_and_writes_json(tiny_data, tmp_path):
    output = tmp_path / "benchmark.json"
    result = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--steps", "3", "--warmup-steps", "1", "--rounds", "1",
         "--variant", "batch_norm=model.batch_norm=true", "--json", str(output),
         f"hydra.searchpath=[file://{tiny_data.config_dir}]", "data=tiny", "trainer.max_epochs=1"],
        check=False, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert set(report["throughput"]) == {"plain loop", "project's net, plain loop", "project", "batch_norm"}
    assert report["throughput"]["plain loop"]["vs_plain_loop"] == 1.0
    assert all(row["images_per_s"] > 0 for row in report["throughput"].values())
    assert report["lightning_overhead"] < 1
    assert report["batch_size"] == 32  # the tiny data config reached the timed paths
    fast = report["runs"]["time to accuracy"]
    assert "experiment=fast" in fast["command"] and 0 <= fast["test_acc"] <= 1 and fast["wall_time_s"] > 0
    assert report["runs"]["default run memory"]["peak_memory_mb"] > 0
    assert "plain loop" in result.stdout and "time to accuracy" in result.stdout
