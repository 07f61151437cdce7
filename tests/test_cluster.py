"""Sweeps submitted to a real SLURM scheduler, the one-machine cluster of scripts/local_cluster.py:
with the default trainer, a job requeued while it trains, a job cancelled, a job array sbatch
refuses; and the script that starts and stops that cluster."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    PROBES,
    PROJECT_ROOT,
    make_tiny_data,
    only_run_dir,
    only_sweep_dir,
    read_tensorboard,
    run_script,
)
from run_probes import trained_batches, trained_weights
from test_resume import RUN, STEP_CHECKPOINTS, assert_same_run, recorded

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

# sbatch hands the submitting process's environment to the job: the probes reach it this way.
PROBES_ENVIRONMENT = {**os.environ, **PROBES}


@pytest.fixture(scope="module")
def identified_data(tmp_path_factory):
    """The resume tests' data: 15 steps an epoch, each image's id in its pixels."""
    return make_tiny_data(tmp_path_factory.mktemp("cluster_data"), train_size=260, test_size=91, val_size=20)


def train_arguments(tiny, log_dir: Path, *overrides: str, on_slurm: bool = True) -> list[str]:
    """`python train.py` on the tiny data with the default trainer, a sweep on SLURM unless not
    `on_slurm`; one torch thread, so that two jobs run side by side on the cluster's two CPUs."""
    options = ["--config-dir", str(tiny.config_dir)]  # Hydra's options come before the overrides
    if on_slurm:
        options = ["-m", *options, "hydra/launcher=submitit_slurm"]
    return [*options, "data=tiny", f"log_dir={log_dir}", "trainer.enable_progress_bar=false", "threads=1",
            *overrides]


def slurm_state(job_id: str) -> str:
    """The job's state as slurmctld reports it (it keeps ended jobs for MinJobAge, 300 s)."""
    shown = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True,
                           check=True)
    return re.search(r"JobState=(\S+)", shown.stdout).group(1)


def submitted_jobs(sweep_dir: Path) -> dict[int, str]:
    """Sweep job number -> SLURM job id (<array job>_<number>; a sweep of one job is no array)."""
    ids = [path.name.removesuffix("_submitted.pkl") for path in (sweep_dir / ".submitit").glob("*/*_submitted.pkl")]
    return {int(job_id.split("_")[1]) if "_" in job_id else 0: job_id for job_id in ids}


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.5)


def test_a_sweep_through_sbatch_with_the_default_trainer_runs_both_jobs_and_summarises_them(
        local_cluster, identified_data, tmp_path):
    result = run_script("train.py", *train_arguments(identified_data, tmp_path, "trainer.max_epochs=2",
                                                                    "optimizer.lr=0.001,0.003"), timeout_s=600)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    for job in ("0", "1"):
        assert json.loads((sweep_dir / job / "metrics.json").read_text())["status"] == "completed"
    summary = (sweep_dir / "summary.md").read_text()
    assert "| 0 | 0.001 |" in summary and "| 1 | 0.003 |" in summary
    # Each job went through the scheduler, asking for one CPU and no GPU.
    jobs = submitted_jobs(sweep_dir)
    assert sorted(jobs) == [0, 1]
    for job_id in jobs.values():  # a job's result is written before SLURM has finished ending it
        wait_for(lambda job_id=job_id: slurm_state(job_id) == "COMPLETED", 60, f"SLURM job {job_id} completed")
    [script] = (sweep_dir / ".submitit").glob("*/*_submission.sh")
    assert "#SBATCH --cpus-per-task=1" in script.read_text() and "--gpus" not in script.read_text()
    # This cluster has no accounting: one line says so, not one per status poll.
    assert output.count("sacct") == 1 and "Bypassing" not in output, output[-3000:]
    assert "ConfigStore schema" not in output  # Hydra's notice about the launcher config's name


def test_a_job_requeued_while_it_trains_continues_from_its_checkpoint_to_the_uninterrupted_run(
        local_cluster, identified_data, tmp_path):
    waiting = tmp_path / "waiting_at_step_20"  # the step checkpoint before it is at step 16
    arguments = train_arguments(identified_data, tmp_path / "requeued", *RUN, STEP_CHECKPOINTS,
                                *recorded(tmp_path / "requeued"), "+callbacks.wait._target_=run_probes.WaitAtStep",
                                "+callbacks.wait.at_step=20", f"+callbacks.wait.marker={waiting}")
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), *arguments]
    with subprocess.Popen(command, cwd=PROJECT_ROOT, env=PROBES_ENVIRONMENT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as sweep:
        wait_for(waiting.exists, 300, "job at step 20")
        [job_id] = submitted_jobs(only_sweep_dir(tmp_path / "requeued")).values()
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        # SLURM holds a requeued job back for two minutes; the test lets it start at once.
        wait_for(lambda: slurm_state(job_id) == "PENDING", 60, "requeued job pending")
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)
        output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, output[-3000:]

    reference = run_script("train.py", *train_arguments(identified_data, tmp_path / "alone", *RUN, STEP_CHECKPOINTS,
                                                        *recorded(tmp_path / "alone"), on_slurm=False),
                           env=PROBES_ENVIRONMENT)
    assert reference.returncode == 0, reference.stderr[-3000:]
    job_dir = only_sweep_dir(tmp_path / "requeued") / "0"
    assert "Restored all states from the checkpoint" in (job_dir / ".." / ".submitit").joinpath(
        job_id, f"{job_id}_0_log.err").read_text()
    assert_same_run(outcome(job_dir, tmp_path / "requeued"), outcome(only_run_dir(tmp_path / "alone"),
                                                                     tmp_path / "alone"))


def test_a_cancelled_job_is_reported_interrupted_and_fails_the_sweep_whose_other_job_completes(
        local_cluster, identified_data, tmp_path):
    waiting = tmp_path / "waiting"
    # Job 0 waits at step 5 for the test to cancel it; job 1 (at_step -1) never waits.
    arguments = train_arguments(identified_data, tmp_path, "+callbacks.wait._target_=run_probes.WaitAtStep",
                                "+callbacks.wait.at_step=5,-1", f"+callbacks.wait.marker={waiting}")
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), *arguments]
    with subprocess.Popen(command, cwd=PROJECT_ROOT, env=PROBES_ENVIRONMENT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as sweep:
        wait_for(waiting.exists, 300, "job 0 at step 5")
        subprocess.run(["scancel", submitted_jobs(only_sweep_dir(tmp_path))[0]], check=True)
        output, _ = sweep.communicate(timeout=600)

    assert sweep.returncode == 1, output[-3000:]
    assert "sweep failed: 1 of 2 jobs failed: 0" in output and "Traceback" not in output, output[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    statuses = {job: json.loads((sweep_dir / job / "metrics.json").read_text())["status"] for job in ("0", "1")}
    assert statuses == {"0": "interrupted", "1": "completed"}
    assert re.search(r"\| 0 \| 5 \|.*\| interrupted \|", (sweep_dir / "summary.md").read_text())


def outcome(run_dir: Path, probes: Path) -> dict:
    """What the run in `run_dir` computed, as test_resume compares runs."""
    return {"batches": trained_batches(probes / "batches"), "weights": trained_weights(probes / "batches"),
            "metrics": json.loads((run_dir / "metrics.json").read_text()), "scalars": read_tensorboard(run_dir)[0]}


def test_a_sweep_sbatch_refuses_stops_in_one_line_naming_why_and_leaves_no_folder(local_cluster, tiny_data, tmp_path):
    result = run_script("train.py", *train_arguments(tiny_data, tmp_path, "hydra.launcher.partition=gpu",
                                                     "optimizer.lr=0.001,0.003"))

    assert result.returncode == 1
    [error] = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert "sbatch refused" in error and "invalid partition" in error and "hydra.launcher" in error, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "multiruns").exists() or not any((tmp_path / "multiruns").iterdir())


def cluster_pids() -> dict[str, str]:
    """Daemon -> pid, as `scripts/local_cluster.py status` reports them running."""
    result = run_script("scripts/local_cluster.py", "status")
    return {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines() if "running, pid" in line}


def test_the_local_cluster_script_starts_once_and_stops_only_what_it_started(local_cluster):
    started = cluster_pids()
    assert set(started) == {"munged", "slurmctld", "slurmd", "postgres"}
    again = run_script("scripts/local_cluster.py", "up")
    assert again.returncode == 0 and cluster_pids() == started  # up again: nothing restarted
    # A process of the same name that the script did not start, as a user's own daemon would be.
    with subprocess.Popen(["bash", "-c", "exec -a slurmd sleep 120"]) as bystander:
        try:
            stopped = run_script("scripts/local_cluster.py", "down")
            assert stopped.returncode == 0, stopped.stderr
            assert run_script("scripts/local_cluster.py", "status").returncode == 1 and not cluster_pids()
            for pid in started.values():
                assert not Path(f"/proc/{pid}").exists(), pid
            assert bystander.poll() is None
        finally:
            bystander.kill()
            restarted = run_script("scripts/local_cluster.py", "up")  # for the tests after this one
    assert restarted.returncode == 0, restarted.stderr
    node = subprocess.run(["sinfo", "--noheader", "-o", "%T"], capture_output=True, text=True, check=True)
    assert node.stdout.strip() == "idle"
    assert subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "55432"], check=False).returncode == 0
