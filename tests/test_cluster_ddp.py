"""DDP across SLURM tasks: one sweep job on the local cluster (scripts/local_cluster.py) whose
ranks SLURM starts, compared with the same DDP run started on this machine by the project's own launcher."""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import DDP, PROBES, only_run_dir, only_sweep_dir, read_tensorboard, run_train
from run_probes import rank_environment

from mnist_cnn.job_lock import LOCK_FILE
from mnist_cnn.sweep_summary import SWEEP_ID_FILE

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

# Two ranks of one CPU thread each: the job fits the local cluster's two CPUs.
TWO_RANKS = (*DDP, "threads=1")


@dataclass
class Runs:
    sweep_dir: Path  # the SLURM sweep of one job, folder 0
    ranks: Path  # where RecordRankEnvironment wrote what each SLURM rank saw
    local_run_dir: Path  # the reference: the same run, its ranks started by HydraDDPStrategy
    slurm_output: str  # what the sweep command printed


@pytest.fixture(scope="module")
def runs(local_cluster, tiny_data, tmp_path_factory) -> Runs:
    root = tmp_path_factory.mktemp("cluster_ddp")
    slurm = run_train(tiny_data, root / "slurm", "hydra/launcher=submitit_slurm", *TWO_RANKS,
                      "+callbacks.ranks._target_=run_probes.RecordRankEnvironment",
                      f"+callbacks.ranks.path={root}/ranks", multirun=True, timeout_s=600, env=PROBES)
    assert slurm.returncode == 0, slurm.stderr[-3000:]
    local = run_train(tiny_data, root / "local", *TWO_RANKS)
    assert local.returncode == 0, local.stderr[-3000:]
    return Runs(only_sweep_dir(root / "slurm"), root / "ranks", only_run_dir(root / "local"),
                slurm.stdout + slurm.stderr)


def test_each_rank_of_the_job_is_a_slurm_task_joined_by_lightnings_slurm_environment(runs):
    # Ranks that one task started itself (HydraDDPStrategy's launcher) would all carry its SLURM_PROCID.
    for rank in (0, 1):
        assert rank_environment(runs.ranks, rank) == {"slurm_procid": str(rank),
                                                      "cluster_environment": "SLURMEnvironment"}
    with (runs.sweep_dir / "summary.csv").open() as summary:
        assert [(job["job"], job["status"]) for job in csv.DictReader(summary)] == [("0", "completed")]


def test_the_sweep_waits_on_each_task_through_squeue_and_says_once_that_sacct_fails(runs):
    assert runs.slurm_output.count("sacct") == 1 and "Bypassing" not in runs.slurm_output, runs.slurm_output[-3000:]


def test_the_slurm_job_trains_and_tests_exactly_like_local_ddp(runs):
    job_dir = runs.sweep_dir / "0"
    job_metrics = json.loads((job_dir / "metrics.json").read_text())
    local_metrics = json.loads((runs.local_run_dir / "metrics.json").read_text())
    assert job_metrics["status"] == "completed" and job_metrics["world_size"] == 2
    for key in ("steps", "test_images", "test/acc", "test/loss", "val/acc_best"):
        assert job_metrics[key] == local_metrics[key], key
    job_weights, local_weights = (torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                                  for run_dir in (job_dir, runs.local_run_dir))
    assert job_weights.keys() == local_weights.keys()
    for name, weights in job_weights.items():
        assert torch.equal(weights, local_weights[name]), name
    # Every scalar rank 0 logged is in the job's TensorBoard events, none lost to another rank.
    assert read_tensorboard(job_dir)[0] == read_tensorboard(runs.local_run_dir)[0]


def entries(folder: Path) -> set[str]:
    """The names in `folder`, less TensorBoard's event files (named by time and process)."""
    return {path.name for path in folder.iterdir() if not path.name.startswith("events.out.tfevents")}


def test_only_rank_0_writes_into_the_job_folder_as_in_local_ddp(runs):
    job_dir = runs.sweep_dir / "0"
    assert entries(job_dir) == entries(runs.local_run_dir) | {LOCK_FILE}  # a sweep job holds a lock while it runs
    # One config snapshot: rank 1 did not take rank 0's for an earlier run of the job (a requeue).
    # (a sweep job's snapshot also names the sweep that launched it)
    assert entries(job_dir / ".hydra") == entries(runs.local_run_dir / ".hydra") | {SWEEP_ID_FILE}
    # Rank 1 logs into its own SLURM output, not into rank 0's train.log.
    assert (job_dir / "train.log").read_text().count("torch uses 1 threads") == 1
