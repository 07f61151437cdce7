"""Beyond one process: DDP on CPU (gloo) for a run and inside sweeps, the submitit launchers."""

import json
import os
from pathlib import Path

import lightning as L
import pytest
from conftest import (
    CONFIG_DIR,
    DDP,
    cpu_trainer,
    make_tiny_data,
    only_run_dir,
    only_sweep_dir,
    run_eval,
    run_train,
)
from hydra import compose, initialize_config_dir
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf

from mnist_cnn import train
from mnist_cnn.config import register_resolvers
from mnist_cnn.job_lock import LOCK_FILE

# What one run folder holds: rank 0's files only, no second snapshot or log of another rank.
RUN_FOLDER = {".hydra", "checkpoints", "figures", "metrics.json", "train.log", "hparams.yaml"}
# A sweep job keeps its hparams.yaml beside its events, and holds a lock while it runs.
SWEEP_JOB_FOLDER = RUN_FOLDER - {"hparams.yaml"} | {LOCK_FILE}


def run_folder_entries(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir() if not p.name.startswith("events.out.tfevents")}


def steps_per_epoch_on_half_the_data(tiny) -> int:
    per_rank = (tiny.train_size - tiny.val_size) // 2
    return -(-per_rank // 32)  # batch size 32 in data=tiny


@pytest.fixture(scope="module")
def odd_tiny_data(tmp_path_factory):
    """65 validation and 65 test images: the two ranks hold 33 and 32 of each, in 2 and 1 batches."""
    return make_tiny_data(tmp_path_factory.mktemp("odd_tiny"), test_size=65, val_size=65)


# A net that still makes mistakes after one epoch: the test figures have something to compare.
WEAK_NET = ("model.channels=[2,4]", "optimizer.lr=0.001", "trainer.max_epochs=1")


@pytest.mark.slow
def test_ddp_run_trains_each_rank_on_half_the_data_and_tests_like_one_process(odd_tiny_data, tmp_path):
    result = run_train(odd_tiny_data, tmp_path / "ddp", *DDP, *WEAK_NET)

    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "ddp")
    assert run_folder_entries(run_dir) == RUN_FOLDER
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and "val/acc_best" in metrics
    assert metrics["steps"] == metrics["epochs"] * steps_per_epoch_on_half_the_data(odd_tiny_data)
    # The same weights tested by one process: every figure of the uneven shards must agree.
    single = run_eval(odd_tiny_data, tmp_path / "single", run_dir / "checkpoints" / "best.ckpt")
    assert single.returncode == 0, single.stderr[-3000:]
    expected = json.loads((only_run_dir(tmp_path / "single", "evals") / "metrics.json").read_text())
    assert expected["test_images"] == odd_tiny_data.test_size and expected["test/misclassified"] > 0
    for key in ("test_images", "test/confusion_matrix", "test/misclassified", "test/top_confusions"):
        assert metrics[key] == expected[key], key
    for key in ("test/acc", "test/loss", "test/ece"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_ddp_inside_a_sweep_gives_each_job_exactly_one_run_folder(odd_tiny_data, tmp_path):
    result = run_train(odd_tiny_data, tmp_path, *DDP, "optimizer.lr=0.001,0.003", "trainer.max_epochs=1",
                       multirun=True)

    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["multiruns"]  # no stray runs/ from the ranks
    sweep_dir = only_sweep_dir(tmp_path)
    assert {p.name for p in sweep_dir.iterdir()} == {"0", "1", "multirun.yaml", "summary.csv", "summary.md",
                                                     "summary.png"}
    for job in ("0", "1"):
        # A sweep job's events (and hparams.yaml) go into one subfolder named by its overrides.
        [tensorboard_run] = run_folder_entries(sweep_dir / job) - SWEEP_JOB_FOLDER
        assert ("lr=0.001" if job == "0" else "lr=0.003") in tensorboard_run.split(",")
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and metrics["test_images"] == odd_tiny_data.test_size


@pytest.mark.slow
def test_ddp_inside_a_sweep_preset_runs_each_rank_as_a_single_job(odd_tiny_data, tmp_path):
    # The preset sets hydra.mode=MULTIRUN in its YAML; the values given here replace its grid
    # (two jobs). The ranks a job starts must run that job, not sweeps of their own.
    result = run_train(odd_tiny_data, tmp_path, *DDP, "experiment=lr_batch_channels_grid", "optimizer.lr=0.001",
                       "data.batch_size=32", "model.channels=[4,8],[8,16]", "trainer.max_epochs=1")

    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["multiruns"]
    sweep_dir = only_sweep_dir(tmp_path)  # the ranks made no sweep folders of their own
    assert {p.name for p in sweep_dir.iterdir()} == {"0", "1", "multirun.yaml", "summary.csv", "summary.md",
                                                     "summary.png"}
    for job in ("0", "1"):
        assert {p.name for p in (sweep_dir / job).iterdir()} >= SWEEP_JOB_FOLDER
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["world_size"] == 2


@pytest.mark.parametrize("cpus, n_jobs, threads", [
    (16, None, 8),  # two ranks of one job
    (16, 2, 4),  # two joblib jobs side by side, each with two ranks
    (3, None, 1),
    (1, 2, 1),  # never fewer than one
])
def test_ddp_ranks_on_the_cpu_share_the_usable_cpus_with_each_other_and_with_parallel_jobs(
        monkeypatch, cpus, n_jobs, threads):
    monkeypatch.setattr(train, "usable_cpus", lambda: cpus)
    launcher = OmegaConf.create({"_target_": "BasicLauncher"} if n_jobs is None else {"n_jobs": n_jobs})
    two_ranks = cpu_trainer(2)

    assert train.torch_threads(None, launcher, two_ranks) == threads
    assert train.torch_threads(3, launcher, two_ranks) == 3  # an explicit `threads=` wins


def test_a_slurm_task_uses_the_cpus_slurm_gave_it_not_a_share_of_the_node(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))  # tasks not pinned to CPUs
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    basic, joblib = OmegaConf.create({"_target_": "BasicLauncher"}), OmegaConf.create({"n_jobs": 3})

    assert train.torch_threads(None, basic, cpu_trainer(1)) == 3
    assert train.torch_threads(None, joblib, cpu_trainer(1)) == 1  # joblib's jobs share the task's CPUs
    for variable, value in {"SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "2",
                            "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODELIST": "node1", "SLURM_JOB_ID": "1"}.items():
        monkeypatch.setenv(variable, value)  # rank 0 of a job of two tasks
    slurm_tasks = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False,
                            plugins=[SLURMEnvironment(auto_requeue=False)])  # two ranks, each a SLURM task
    assert train.torch_threads(None, basic, slurm_tasks) == 3  # each has 3 CPUs of its own


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


def slurm_request(*overrides: str) -> tuple[int, int, int, int]:
    """(nodes, tasks per node, GPUs per node, CPUs per task) the SLURM launcher asks for."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=submitit_slurm", *overrides], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    return launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node, launcher.cpus_per_task


def test_slurm_launcher_asks_for_one_task_and_gpu_per_device_of_a_gpu_trainer():
    assert slurm_request("trainer=ddp", "trainer.accelerator=gpu", "trainer.devices=4", "trainer.num_nodes=2",
                         "threads=8") == (2, 4, 4, 8)
    assert slurm_request("trainer=gpu")[:3] == (1, 1, 1)


@pytest.mark.parametrize("trainer", ["default", "cpu", "ddp"])
def test_slurm_launcher_asks_no_gpu_for_a_trainer_without_one_and_cpus_for_its_threads(trainer):
    nodes, tasks, gpus, cpus = slurm_request(f"trainer={trainer}", "threads=3")
    assert (nodes, gpus, cpus) == (1, None, 3)  # no --gpus-per-node line
    assert tasks == (2 if trainer == "ddp" else 1)
