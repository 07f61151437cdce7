"""Beyond one process: DDP on CPU (gloo) for a run and inside sweeps, the submitit launchers."""

import json
from pathlib import Path

import pytest
from conftest import CONFIG_DIR, only_run_dir, only_sweep_dir, run_train
from hydra import compose, initialize_config_dir

from mnist_cnn.config import register_resolvers

DDP = ("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu")
# What one run folder holds: rank 0's files only, no second snapshot or log of another rank.
RUN_FOLDER = {".hydra", "checkpoints", "figures", "metrics.json", "train.log", "hparams.yaml"}


def run_folder_entries(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir() if not p.name.startswith("events.out.tfevents")}


def steps_per_epoch_on_half_the_data(tiny) -> int:
    per_rank = (tiny.train_size - tiny.val_size) // 2
    return -(-per_rank // 32)  # batch size 32 in data=tiny


@pytest.mark.slow
def test_ddp_run_trains_each_rank_on_half_the_data_and_tests_every_image_once(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, *DDP)

    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    assert run_folder_entries(run_dir) == RUN_FOLDER
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["test_images"] == tiny_data.test_size
    assert sum(map(sum, metrics["test/confusion_matrix"])) == tiny_data.test_size
    assert metrics["steps"] == metrics["epochs"] * steps_per_epoch_on_half_the_data(tiny_data)


@pytest.mark.slow
def test_ddp_inside_a_sweep_gives_each_job_exactly_one_run_folder(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, *DDP, "optimizer.lr=0.001,0.003", "trainer.max_epochs=1",
                       multirun=True)

    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["multiruns"]  # no stray runs/ from the ranks
    sweep_dir = only_sweep_dir(tmp_path)
    assert {p.name for p in sweep_dir.iterdir()} == {"0", "1", "multirun.yaml", "summary.csv", "summary.md",
                                                     "summary.png"}
    for job in ("0", "1"):
        # A sweep job's events (and hparams.yaml) go into one subfolder named by its overrides.
        [tensorboard_run] = run_folder_entries(sweep_dir / job) - (RUN_FOLDER - {"hparams.yaml"})
        assert ("lr=0.001" if job == "0" else "lr=0.003") in tensorboard_run.split(",")
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and metrics["test_images"] == tiny_data.test_size


@pytest.mark.slow
def test_submitit_local_sweep_runs_both_jobs_and_summarises_them(tiny_data, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs pip install -e '.[cluster]'")
    result = run_train(tiny_data, tmp_path, "hydra/launcher=submitit_local", "optimizer.lr=0.001,0.003",
                       "trainer.max_epochs=1", multirun=True)

    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    for job in ("0", "1"):
        assert json.loads((sweep_dir / job / "metrics.json").read_text())["status"] == "completed"
    summary = (sweep_dir / "summary.md").read_text()
    assert "| 0 | 0.001 |" in summary and "| 1 | 0.003 |" in summary


def test_slurm_launcher_asks_for_one_task_and_gpu_per_device_of_the_trainer():
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                                          "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.max_num_timeout > 0  # a job that hits the time limit is requeued
