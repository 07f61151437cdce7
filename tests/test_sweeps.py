"""Sweeps as a user runs them (`python train.py -m ...`) on tiny synthetic data: one folder
per job, TensorBoard run names and hparams, the summary, failing jobs, the joblib launcher,
and the sweep preset. The Optuna search has its own file, test_optuna_search.py."""

import csv
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import (
    CONFIG_DIR,
    cpu_trainer,
    hparams_tab,
    only_sweep_dir,
    run_script,
    run_train,
    tensorboard_runs,
)
from omegaconf import OmegaConf

from mnist_cnn.sweep_summary import SWEEP_ID_VARIABLE, SweepSummary, read_jobs
from mnist_cnn.train import torch_threads

SWEEP_EXTRA = "needs the optional sweep plugins: pip install -e '.[sweep]'"


def job_dirs(sweep_dir: Path) -> dict[str, Path]:
    return {path.name: path for path in sweep_dir.iterdir() if (path / ".hydra").is_dir()}


def job_config(job_dir: Path):
    return OmegaConf.load(job_dir / ".hydra" / "config.yaml")


def job_metrics(job_dir: Path) -> dict:
    return json.loads((job_dir / "metrics.json").read_text())


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open() as file:
        return list(csv.DictReader(file))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])  # width, height from the IHDR chunk


def short_list(values) -> str:
    return "[" + ",".join(str(value) for value in values) + "]"


# --- a 2x2 grid: learning rate x channel widths -------------------------------------------

@pytest.fixture(scope="module")
def grid_sweep(tiny_data, tmp_path_factory) -> Path:
    log_dir = tmp_path_factory.mktemp("logs")
    result = run_train(tiny_data, log_dir, "optimizer.lr=0.001,0.003", "model.channels=[4,8],[8,16]",
                       "trainer.max_epochs=1", multirun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return only_sweep_dir(log_dir)


@pytest.mark.slow
def test_grid_sweep_runs_every_combination_in_its_own_job_folder(grid_sweep):
    jobs = job_dirs(grid_sweep)
    assert sorted(jobs) == ["0", "1", "2", "3"]
    combinations = {(job_config(d).optimizer.lr, tuple(job_config(d).model.channels)) for d in jobs.values()}
    assert combinations == {(0.001, (4, 8)), (0.001, (8, 16)), (0.003, (4, 8)), (0.003, (8, 16))}
    for job_dir in jobs.values():
        assert (job_dir / "checkpoints" / "best.ckpt").exists()
        assert job_metrics(job_dir)["status"] == "completed"
    assert len({job_metrics(d)["test/loss"] for d in jobs.values()}) == 4  # four different models


@pytest.mark.slow
def test_swept_list_values_reach_each_job_as_lists(grid_sweep):
    for job_dir in job_dirs(grid_sweep).values():
        channels = OmegaConf.to_container(job_config(job_dir).model.channels)
        assert isinstance(channels, list) and all(isinstance(width, int) for width in channels)
        checkpoint = torch.load(job_dir / "checkpoints" / "best.ckpt", weights_only=True)
        assert checkpoint["hyper_parameters"]["model"]["channels"] == channels
        assert checkpoint["state_dict"]["net.features.0.weight"].shape[0] == channels[0]


@pytest.mark.slow
def test_summary_lists_every_job_best_validation_first(grid_sweep):
    rows = summary_rows(grid_sweep)
    assert sorted(row["job"] for row in rows) == ["0", "1", "2", "3"]
    for row in rows:
        metrics = job_metrics(grid_sweep / row["job"])
        assert row["status"] == "completed"
        for metric in ("val/acc_best", "test/acc", "test/loss"):
            assert float(row[metric]) == pytest.approx(metrics[metric])
        assert row["optimizer.lr"] == str(job_config(grid_sweep / row["job"]).optimizer.lr)
    val_acc = [float(row["val/acc_best"]) for row in rows]
    assert val_acc == sorted(val_acc, reverse=True)
    assert "trainer.max_epochs" not in rows[0]  # the same for every job: not a swept column
    table = [line for line in (grid_sweep / "summary.md").read_text().splitlines()
             if line.startswith("| ") and not line.startswith("| ---")]
    assert len(table) == 1 + 4 and "model.channels" in table[0]
    width, height = png_size(grid_sweep / "summary.png")
    assert width >= 800 and height >= 300


@pytest.mark.slow
def test_tensorboard_names_each_job_by_the_values_the_sweep_varies(grid_sweep):
    names = set(tensorboard_runs(grid_sweep).Runs())
    # the settings every job shares (data, trainer, epochs, log_dir) are left out
    expected = {f"{job}/channels={short_list(job_config(d).model.channels)},lr={job_config(d).optimizer.lr:g}"
                for job, d in job_dirs(grid_sweep).items()}
    assert names == expected


@pytest.mark.slow
def test_hparams_tab_compares_every_job_with_its_metrics(grid_sweep):
    sessions = hparams_tab(grid_sweep)
    assert len(sessions) == 4, sorted(sessions)
    for job, job_dir in job_dirs(grid_sweep).items():
        [(hparams, metrics)] = [session for name, session in sessions.items() if name.startswith(f"{job}/")]
        config, recorded = job_config(job_dir), job_metrics(job_dir)
        assert hparams["optimizer/lr"] == pytest.approx(config.optimizer.lr)
        assert hparams["model/channels"] == str(list(config.model.channels))
        for metric in ("val/acc_best", "test/acc"):
            assert metrics[metric] == pytest.approx(recorded[metric])


# --- the sweep preset, with jobs that fail ------------------------------------------------

PRESET = CONFIG_DIR / "experiment" / "lr_batch_channels_grid.yaml"


@pytest.fixture(scope="module")
def preset_sweep(tiny_data, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The preset's learning rates, crossed with a good and an impossible network."""
    log_dir = tmp_path_factory.mktemp("logs")
    result = run_train(tiny_data, log_dir, "experiment=lr_batch_channels_grid", "data.batch_size=32",
                       "model.channels=[4,8],[0]", "trainer.max_epochs=1")
    return result, only_sweep_dir(log_dir)


@pytest.mark.slow
def test_sweep_preset_runs_a_multirun_without_dash_m(preset_sweep):
    result, sweep_dir = preset_sweep
    assert result.returncode == 1, result.stderr[-3000:]  # its jobs with channels [0] fail
    preset_lrs = {float(lr) for lr in OmegaConf.load(PRESET).hydra.sweeper.params["optimizer.lr"].split(",")}
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 2 * len(preset_lrs)
    assert {job_config(d).optimizer.lr for d in jobs.values()} == preset_lrs


@pytest.mark.slow
def test_preset_jobs_are_named_by_what_varies_in_the_preset_and_on_the_command_line(preset_sweep):
    _, sweep_dir = preset_sweep
    completed = {job: d for job, d in job_dirs(sweep_dir).items() if (d / "metrics.json").exists()}
    # the preset varies lr, batch size and channels; data.batch_size=32 on the command line fixes one
    expected = {f"{job}/channels=[4,8],lr={job_config(d).optimizer.lr:g}" for job, d in completed.items()}
    assert len(expected) == 2 and set(tensorboard_runs(sweep_dir).Runs()) == expected


@pytest.mark.slow
def test_failing_jobs_do_not_stop_the_sweep_and_are_summarised_as_failed(preset_sweep):
    result, sweep_dir = preset_sweep
    assert result.returncode == 1, result.stderr[-3000:]
    failed = {job for job, d in job_dirs(sweep_dir).items() if list(job_config(d).model.channels) == [0]}
    assert len(failed) == 2
    for job in failed:
        assert not (sweep_dir / job / "metrics.json").exists()
        assert "model.channels=[0]" in (sweep_dir / job / "train.log").read_text()
    rows = summary_rows(sweep_dir)
    assert [row["status"] for row in rows] == ["completed", "completed", "failed", "failed"]
    assert {row["job"] for row in rows[2:]} == failed and rows[2]["val/acc_best"] == ""
    assert "jobs not completed" in result.stdout


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_sweep_with_a_failing_job_runs_every_job_writes_its_summary_then_exits_non_zero(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "model.channels=[4,8],[0],[8,16]", "trainer.max_epochs=1",
                       multirun=True)

    assert result.returncode == 1
    sweep_dir = only_sweep_dir(tmp_path)
    statuses = {row["job"]: row["status"] for row in summary_rows(sweep_dir)}
    assert statuses == {"0": "completed", "1": "failed", "2": "completed"}
    assert (sweep_dir / "summary.md").exists() and (sweep_dir / "summary.png").exists()
    assert last_line(result).startswith("sweep failed: 1 of 3 jobs failed: 1 "), last_line(result)


@pytest.mark.slow
def test_a_diverged_job_is_a_result_and_the_sweep_exits_zero(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "optimizer=sgd", "optimizer.lr=0.01,1e6,0.03", "trainer.max_epochs=1",
                       multirun=True)

    assert result.returncode == 0, result.stderr[-3000:]
    statuses = {row["job"]: row["status"] for row in summary_rows(only_sweep_dir(tmp_path))}
    assert statuses == {"0": "completed", "1": "diverged", "2": "completed"}
    assert "sweep failed" not in result.stdout + result.stderr


@pytest.mark.slow
def test_summarize_script_rebuilds_the_summary_with_each_jobs_status(preset_sweep, tmp_path):
    _, finished = preset_sweep
    sweep_dir = shutil.copytree(finished, tmp_path / finished.name)
    for name in ("summary.csv", "summary.md", "summary.png"):
        (sweep_dir / name).unlink()
    best = summary_rows(finished)[0]["job"]
    metrics = job_metrics(sweep_dir / best)
    (sweep_dir / best / "metrics.json").write_text(json.dumps({**metrics, "status": "diverged"}))

    result = run_script("scripts/summarize.py", str(sweep_dir), timeout_s=120)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary_rows(sweep_dir)
    assert [row["status"] for row in rows] == ["completed", "diverged", "failed", "failed"]
    assert rows[1]["job"] == best
    assert "| diverged |" in result.stdout and (sweep_dir / "summary.png").exists()


def test_summarize_script_rejects_a_folder_without_jobs(tmp_path):
    result = run_script("scripts/summarize.py", str(tmp_path), timeout_s=120)
    assert result.returncode != 0 and "holds no job folders" in result.stderr


def test_a_completed_job_without_validation_is_summarised_and_plotted(tiny_data, tmp_path):
    # check_val_every_n_epoch=2 in a one-epoch run: completed, tested, no val/acc_best
    result = run_train(tiny_data, tmp_path, "trainer.max_epochs=1", "+trainer.check_val_every_n_epoch=1,2",
                       multirun=True)

    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    rows = summary_rows(sweep_dir)
    assert [row["status"] for row in rows] == ["completed", "completed"]
    assert rows[1]["trainer.check_val_every_n_epoch"] == "2" and rows[1]["val/acc_best"] == "" and rows[1]["test/acc"]
    assert png_size(sweep_dir / "summary.png")[0] > 200
    rebuilt = run_script("scripts/summarize.py", str(sweep_dir), timeout_s=120)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]


def start_job(summary: SweepSummary, job_dir: Path, monkeypatch) -> None:
    """What Hydra does at the start of a job of `summary`'s sweep, in a process that inherited the
    sweep's environment: its snapshot, then the callback."""
    monkeypatch.setenv(SWEEP_ID_VARIABLE, summary.sweep_id)
    (job_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([f"optimizer.lr=0.00{job_dir.name}"]), job_dir / ".hydra" / "overrides.yaml")
    job_config = {"hydra": {"runtime": {"output_dir": str(job_dir)}, "output_subdir": ".hydra"}}
    summary.on_job_start(OmegaConf.create(job_config))


@pytest.fixture
def sweep_id_undone(monkeypatch):
    """A sweep sets its id in this process's environment: undone after the test."""
    monkeypatch.setenv(SWEEP_ID_VARIABLE, "")
    return monkeypatch


def test_a_job_without_metrics_is_running_while_its_process_lives_and_failed_once_it_died(tmp_path, sweep_id_undone):
    # A job of this sweep in a process of its own (as submitit runs it), while the sweep summarises.
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    summary = SweepSummary()
    summary.on_multirun_start(config)
    start_job(summary, tmp_path / "0", sweep_id_undone)
    worker = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from mnist_cnn.job_lock import job_running\n"
        "with job_running(Path(sys.argv[1])):\n    print('running', flush=True); time.sleep(600)"),
        str(tmp_path / "0")], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "running"
        summary.on_multirun_end(config)  # no SystemExit: the job has not failed yet
        assert [job.status for job in read_jobs(tmp_path)] == ["running"]
    finally:
        worker.kill()  # SIGKILL: the kernel releases the lock
        worker.wait()
    assert [job.status for job in read_jobs(tmp_path)] == ["failed"]
    with pytest.raises(SystemExit, match="1 of 1 jobs failed: 0"):
        summary.on_multirun_end(config)


def test_a_worker_sharing_a_sweep_folder_fails_on_its_own_jobs_not_on_another_workers(tmp_path, sweep_id_undone):
    # Two workers of one Optuna study: the other one was cancelled in its job 0, after this one started.
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    this_worker, other_worker = SweepSummary(), SweepSummary()
    this_worker.on_multirun_start(config)
    other_worker.on_multirun_start(config)
    start_job(other_worker, tmp_path / "0", sweep_id_undone)  # no metrics.json, no process left: failed
    start_job(this_worker, tmp_path / "1", sweep_id_undone)
    (tmp_path / "1" / "metrics.json").write_text(json.dumps({"status": "completed", "val/acc_best": 0.9,
                                                             "test/acc": 0.9, "test/loss": 0.3}))

    this_worker.on_multirun_end(config)  # no SystemExit: its own job completed

    assert {row["job"]: row["status"] for row in summary_rows(tmp_path)} == {"0": "failed", "1": "completed"}
    with pytest.raises(SystemExit, match="1 of 1 jobs failed: 0"):
        other_worker.on_multirun_end(config)


# --- parallel jobs -----------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs this process may run on, and CPU affinity (Linux)")
def test_threads_default_to_the_cpus_this_process_may_run_on():
    # As under SLURM's cpus_per_task or taskset: the machine has more cores than the job may use.
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        threads = torch_threads(None, OmegaConf.create({"_target_": "BasicLauncher"}), cpu_trainer(1))
    finally:
        os.sched_setaffinity(0, allowed)
    assert threads == 1


def test_threads_default_to_the_cores_shared_among_parallel_jobs():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    one_process = cpu_trainer(1)
    assert torch_threads(None, OmegaConf.create({"_target_": "BasicLauncher"}), one_process) == cores
    assert torch_threads(3, OmegaConf.create({"n_jobs": 2}), one_process) == 3
    pytest.importorskip("joblib", reason=SWEEP_EXTRA)
    assert torch_threads(None, OmegaConf.create({"n_jobs": 2}), one_process) == max(1, cores // 2)
    assert torch_threads(None, OmegaConf.create({"n_jobs": -1}), one_process) == 1  # joblib: one job per core


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_sharing_the_cores(tiny_data, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason=SWEEP_EXTRA)
    result = run_train(tiny_data, tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "optimizer.lr=0.001,0.003", "model.channels=[4,8]", "trainer.max_epochs=1",
                       multirun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 2 and all(job_metrics(d)["status"] == "completed" for d in jobs.values())
    for job_dir in jobs.values():
        assert f"torch uses {max(1, os.cpu_count() // 2)} threads" in (job_dir / "train.log").read_text()
    # an event file's name ends with <pid>.<n>: two workers, not one after the other in one process
    pids = {next(d.glob("*/events.out.tfevents.*")).name.split(".")[-2] for d in jobs.values()}
    assert len(pids) == 2
    assert len(summary_rows(sweep_dir)) == 2


# --- TensorBoard itself, serving a finished sweep ------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ask(url: str, body: dict | None = None, timeout_s: float = 30):
    """TensorBoard's JSON answer to a GET, or to a POST of `body`."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


@pytest.fixture
def tensorboard_server(grid_sweep):
    """`tensorboard --logdir <sweep>` on a free local port; its base URL once it answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(grid_sweep),
                               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if len(ask(f"{url}/data/runs", timeout_s=5)) == 4:  # up, and every job's events read
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "tensorboard did not serve the sweep's four runs in 120 s"
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_tensorboard_server_shows_every_job_with_its_scalars_and_hparams(grid_sweep, tensorboard_server):
    jobs = job_dirs(grid_sweep)
    runs = ask(f"{tensorboard_server}/data/runs")
    assert sorted(run.split("/")[0] for run in runs) == sorted(jobs)
    tags = ask(f"{tensorboard_server}/data/plugin/scalars/tags")
    for run in runs:
        assert {"train/loss_epoch", "val/acc", "val/acc_best", "test/acc", "test/loss"} <= set(tags[run]), run

    experiment = ask(f"{tensorboard_server}/data/plugin/hparams/experiment", {"experimentName": ""})
    assert {"optimizer/lr", "model/channels", "data/batch_size"} <= {h["name"] for h in experiment["hparamInfos"]}
    assert {"val/acc_best", "test/acc", "test/loss"} <= {m["name"]["tag"] for m in experiment["metricInfos"]}

    groups = ask(f"{tensorboard_server}/data/plugin/hparams/session_groups",
                 {"experimentName": "", "startIndex": 0, "sliceSize": 100,
                  "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
    assert sorted(group["name"] for group in groups["sessionGroups"]) == sorted(runs)
    for group in groups["sessionGroups"]:
        job_dir = jobs[group["name"].split("/")[0]]
        config, recorded = job_config(job_dir), job_metrics(job_dir)
        assert group["hparams"]["optimizer/lr"] == pytest.approx(config.optimizer.lr)
        assert group["hparams"]["model/channels"] == str(list(config.model.channels))
        metrics = {metric["name"]["tag"]: metric["value"] for metric in group["metricValues"]}
        for metric in ("val/acc_best", "test/acc", "test/loss"):
            assert metrics[metric] == pytest.approx(recorded[metric], rel=1e-5), metric


@pytest.mark.slow
def test_a_sweep_run_again_into_its_folder_finishes_it_and_refuses_other_jobs(tiny_data, tmp_path):
    sweep_dir = tmp_path / "my_sweep"
    sweep = ["optimizer.lr=0.001,0.003", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep_dir}"]
    assert run_train(tiny_data, tmp_path, *sweep, multirun=True).returncode == 0
    finished = {name: (folder / "metrics.json").read_bytes() for name, folder in job_dirs(sweep_dir).items()}

    again = run_train(tiny_data, tmp_path, *sweep, multirun=True)  # the same jobs: each is complete

    assert again.returncode == 0, again.stderr[-3000:]
    assert "is complete" in again.stdout + again.stderr
    assert {name: (folder / "metrics.json").read_bytes() for name, folder in job_dirs(sweep_dir).items()} == finished

    other = run_train(tiny_data, tmp_path, "optimizer.lr=0.001,0.01", *sweep[1:], multirun=True)

    assert other.returncode == 1
    line = last_line(other)
    assert "job 1 ran optimizer.lr=0.003" in line and "optimizer.lr=0.01" in line and "new folder" in line, line
    assert "Traceback" not in other.stdout + other.stderr
    assert {name: (folder / "metrics.json").read_bytes() for name, folder in job_dirs(sweep_dir).items()} == finished


@pytest.mark.slow
def test_a_sweep_job_whose_folder_holds_another_jobs_run_refuses_it_in_one_line(tiny_data, tmp_path):
    # A subdir without the job's number puts every job into one folder: the second finds the first's run.
    result = run_train(tiny_data, tmp_path, "optimizer.lr=0.001,0.003", "trainer.max_epochs=1",
                       "hydra.sweep.subdir=shared", multirun=True)

    output = result.stdout + result.stderr
    [refusal] = [line for line in output.splitlines() if "holds another job's run" in line]
    assert "(optimizer.lr=0.001), not this job's (optimizer.lr=0.003)" in refusal and "Traceback" not in output
    [job] = job_dirs(only_sweep_dir(tmp_path)).values()
    assert job_config(job).optimizer.lr == 0.001 and job_metrics(job)["status"] == "completed"
    # The summary lists the refused job beside the one that ran, and the sweep fails naming it.
    statuses = {row["job"]: row["status"] for row in summary_rows(only_sweep_dir(tmp_path))}
    [refused] = [name for name in statuses if name != "shared"]
    assert statuses == {"shared": "completed", refused: "refused"} and refused.startswith("shared/.hydra/resumed_")
    assert result.returncode == 1 and last_line(result).startswith(f"sweep failed: 1 of 2 jobs failed: {refused}")
