"""`python train.py` end to end, as a user runs it, on tiny synthetic data."""

import json
import re

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import CONFIG_DIR, only_run_dir, read_tensorboard, run_train
from hydra import compose, initialize_config_dir

from mnist_cnn.classifier import Classifier
from mnist_cnn.config import register_resolvers
from mnist_cnn.experiment_trackers import hyperparameters


def test_run_folder_holds_snapshot_metrics_checkpoints_and_events(finished_run):
    run_dir, _ = finished_run
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert list(run_dir.glob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert metrics["test_images"] == 150 and metrics["world_size"] == 1
    assert 0.5 < metrics["test/acc"] <= 1.0  # the tiny task is learnable: well above chance
    assert metrics["test/loss"] > 0 and 0 < metrics["val/acc_best"] <= 1


def test_summary_names_accuracy_and_run_folder(finished_run):
    run_dir, result = finished_run
    assert "test accuracy" in result.stdout and str(run_dir) in result.stdout


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_trained_model(finished_run):
    best = finished_run[0] / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["channels"] == [8, 16]
    classifier = Classifier.load_from_checkpoint(best)
    assert [m.out_channels for m in classifier.net.features if isinstance(m, torch.nn.Conv2d)] == [8, 16]
    assert classifier(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_tensorboard_events_hold_scalars_and_hparams(finished_run):
    run_dir, _ = finished_run
    scalars, hparams = read_tensorboard(run_dir)
    for tag in ["train/loss_step", "train/acc_epoch", "val/loss", "val/acc", "val/acc_best",
                "test/acc", "test/loss"]:
        assert tag in scalars, sorted(scalars)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert scalars["test/acc"][-1][1] == pytest.approx(metrics["test/acc"])
    assert hparams["optimizer/lr"] == pytest.approx(0.003)
    assert hparams["model/channels"] == "[8, 16]"
    assert hparams["data/batch_size"] == 32 and hparams["optimizer"] == "Adam"


@pytest.mark.slow
def test_scheduler_option_runs_end_to_end(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "scheduler=onecycle", "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    scalars, _ = read_tensorboard(only_run_dir(tmp_path))
    assert "lr-Adam" in scalars


@pytest.mark.slow
def test_a_run_stopped_before_any_validation_tests_its_final_weights(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "+trainer.max_steps=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "before any validation pass" in result.stdout
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 3
    assert metrics["test_images"] == 150 and "val/acc_best" not in metrics


def test_a_run_whose_validation_accuracy_cannot_rise_stops_after_patience_epochs_and_says_so(tiny_data, tmp_path):
    # At this learning rate no weight moves: every validation pass measures the same accuracy.
    result = run_train(tiny_data, tmp_path, "callbacks=early_stopping", "callbacks.early_stopping.patience=2",
                       "optimizer.lr=1e-12", "trainer.max_epochs=8")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    # The first epoch sets the best accuracy, the next two fail to beat it.
    assert metrics["stopped_early"] is True and metrics["stopped_epoch"] == metrics["epochs"] == 3
    assert metrics["status"] == "completed" and "3 epochs (stopped early)" in result.stdout


def test_a_run_without_early_stopping_records_that_it_ran_its_course(finished_run):
    metrics = json.loads((finished_run[0] / "metrics.json").read_text())
    assert metrics["stopped_early"] is False and metrics["stopped_epoch"] is None


def test_the_step_loss_reaches_tensorboard_at_every_log_every_n_steps(finished_run):
    run_dir, _ = finished_run
    scalars, _ = read_tensorboard(run_dir)
    steps = json.loads((run_dir / "metrics.json").read_text())["steps"]
    logged = [step for step, _ in scalars["train/loss_step"]]
    # the run logs every 5 steps; the step loss is logged only where the logger writes it
    assert logged == list(range(4, steps, 5))


@pytest.mark.slow
def test_log_every_n_steps_zero_writes_no_step_loss(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "trainer.log_every_n_steps=0", "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    scalars, _ = read_tensorboard(only_run_dir(tmp_path))
    assert "train/loss_step" not in scalars and "train/loss_epoch" in scalars


def test_epoch_training_loss_is_the_mean_over_images_not_over_batches():
    classifier = Classifier({"_target_": "mnist_cnn.model.CNN", "channels": [4], "num_classes": 10},
                            {"_target_": "torch.optim.SGD", "lr": 0.1})
    classifier.trainer = L.Trainer(log_every_n_steps=0, logger=False, enable_progress_bar=False)
    images, labels = torch.randn(5, 1, 28, 28), torch.arange(5)
    batches = [(images[:4], labels[:4]), (images[4:], labels[4:])]  # a full batch, then a short last one

    for index, batch in enumerate(batches):
        classifier.training_step(batch, index)

    with torch.no_grad():
        per_image = F.cross_entropy(classifier(images), labels, reduction="none")
    assert classifier.train_loss.compute() == pytest.approx(per_image.mean().item(), rel=1e-5)


def test_with_gradient_accumulation_the_step_loss_is_written_where_lightning_writes_step_values(tiny_data, tmp_path):
    # The learning-rate monitor at step interval writes on exactly the steps Lightning's own
    # step logging writes: 10 batches an epoch in groups of 3 give 4 optimizer steps, every 2nd logged.
    result = run_train(tiny_data, tmp_path, "++trainer.accumulate_grad_batches=3", "trainer.log_every_n_steps=2",
                       "callbacks.learning_rate_monitor.logging_interval=step")
    assert result.returncode == 0, result.stderr[-3000:]
    scalars, _ = read_tensorboard(only_run_dir(tmp_path))
    loss_steps = [step for step, _ in scalars["train/loss_step"]]
    assert loss_steps == sorted({step for step, _ in scalars["lr-Adam"]}) == [1, 3, 5, 7]


@pytest.mark.slow
def test_console_shows_progress_shapes_flops_and_results_but_no_library_notices(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "trainer.max_epochs=1", "trainer.enable_progress_bar=true",
                       env={"COLUMNS": "200"})  # a wide summary table, one line per row
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert "Tip" not in console and "litlogger" not in console
    assert "deprecated" not in console
    assert "srun" not in console  # Lightning's hint on a machine with SLURM installed, as the suite's has
    # Lightning's plain summary says "2.6 M  Total Flops"; with `rich` installed, "Total FLOPs: 2.6 M".
    flops = re.search(r"Total FLOPs: (\S+)|(\S+)(?: [KMGTP])?\s+Total Flops", console)
    assert flops and (flops.group(1) or flops.group(2)) != "0", console[-3000:]
    assert "[1, 1, 28, 28]" in console and "[1, 10]" in console  # the net's input and output shapes
    assert "Epoch 0" in console  # the progress bar
    assert "test accuracy" in console and f"run folder: {only_run_dir(tmp_path)}" in console


def test_hyperparameters_give_each_augmentation_setting_its_own_column():
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        flat = hyperparameters(compose("train", overrides=["experiment=best", "data.data_dir=/data"]))
    assert flat["data/augment/rotation_deg"] == 10 and flat["data/augment/horizontal_flip"] is False
    assert flat["model/convs_per_block"] == 2 and flat["data/dataset"] == "MNIST"
    assert not any(key.startswith(("data/md5", "data/sources", "data/class_names")) for key in flat)
