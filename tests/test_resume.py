"""A stopped run, resumed, computes exactly what an uninterrupted run computes.

Each interrupted run below is stopped at an exact step by a probe callback (SIGINT,
SIGTERM, or SIGKILL, which leaves only the last step checkpoint), then resumed the way a
user or a cluster resumes it. Its record of every step's images, its final weights, its
metrics and its learning-rate curve must equal those of the same run left alone.
"""

import dataclasses
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    DDP,
    PROJECT_ROOT,
    make_tiny_data,
    only_run_dir,
    read_tensorboard,
    run_train,
    run_until_exit,
    train_arguments,
)
from omegaconf import OmegaConf
from run_probes import stopped_step, trained_batches, trained_weights

from mnist_cnn.resume import ResumeError, resumed_config
from mnist_cnn.train import usable_cpus

TESTS_DIR = Path(__file__).parent
# 240 training images in batches of 16: 15 steps an epoch, 45 in all; a step checkpoint every 8.
RUN = ("data.batch_size=16", "model.channels=[4,8]", "trainer.max_epochs=3", "trainer.log_every_n_steps=1",
       "callbacks.learning_rate_monitor.logging_interval=step", "+callbacks.model_checkpoint.every_n_train_steps=8")
PROBES = {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def identified_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("resume_data"), train_size=260, test_size=91, val_size=20)


def recorded(log_dir: Path) -> list[str]:
    return ["+callbacks.record._target_=run_probes.RecordTrainedBatches", f"+callbacks.record.path={log_dir}/batches"]


def train(tiny, log_dir: Path, *overrides: str):
    return run_train(tiny, log_dir, *RUN, *recorded(log_dir), *overrides, env=PROBES)


def train_ddp(tiny, log_dir: Path, *overrides: str) -> tuple[int | None, str]:
    """`train` on two CPU ranks: (exit code, output), or (None, output) if it hung."""
    return run_ddp(*train_arguments(tiny, log_dir, *RUN, *recorded(log_dir), *DDP, *overrides))


def run_ddp(*arguments: str) -> tuple[int | None, str]:
    """`python train.py <arguments>` with the probes, killed with all its ranks if it hangs."""
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), *arguments]
    return run_until_exit(command, timeout_s=240, env={**os.environ, **PROBES})


def interrupt_at(step: int, signal_name: str, rank: int | None = None) -> list[str]:
    return ["+callbacks.interrupt._target_=run_probes.SignalAtStep", f"+callbacks.interrupt.at_step={step}",
            f"+callbacks.interrupt.signal_name={signal_name}",
            *([f"+callbacks.interrupt.rank={rank}"] if rank is not None else [])]


NO_INTERRUPT = "++callbacks.interrupt.at_step=-1"


def outcome(log_dir: Path, rank: int = 0) -> dict:
    """What the run in `log_dir` computed, as rank `rank` saw it."""
    run_dir = only_run_dir(log_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"batches": trained_batches(log_dir / "batches", rank), "weights": trained_weights(log_dir / "batches", rank),
            "metrics": metrics, "scalars": read_tensorboard(run_dir)[0]}


@pytest.fixture(scope="module")
def uninterrupted(identified_data, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("uninterrupted")
    result = train(identified_data, log_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return outcome(log_dir)


def assert_same_run(resumed: dict, expected: dict) -> None:
    assert sorted(resumed["batches"]) == list(range(expected["metrics"]["steps"])) == sorted(expected["batches"])
    for step, record in expected["batches"].items():  # the same images, in the same order, step by step
        assert resumed["batches"][step] == record, f"step {step} trained on other images"
    assert resumed["weights"].keys() == expected["weights"].keys()
    for name, tensor in expected["weights"].items():
        assert torch.equal(resumed["weights"][name], tensor), name
    for key in ("test/acc", "test/loss", "val/acc_best", "epochs", "steps", "status"):
        assert resumed["metrics"][key] == expected["metrics"][key], key
    for tag in ("lr-Adam", "train/loss_step", "val/acc"):  # one step axis, the same values
        assert resumed["scalars"][tag] == expected["scalars"][tag], tag


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, step, resume_by", [
    ("SIGINT", 7, "resume=latest"),  # epoch 0
    ("SIGINT", 20, "ckpt_path"),  # epoch 1, its 6th step
    ("SIGTERM", 10, "requeue"),  # epoch 0
    ("SIGTERM", 33, "resume=latest"),  # epoch 2
    # Killed: only the last step checkpoint is left (every 8 steps, once validation has run).
    ("SIGKILL", 28, "ckpt_path"),  # epoch 1, continues from step 24
    ("SIGKILL", 37, "requeue"),  # epoch 2, continues from step 32, as a cluster requeues a job
])
def test_interrupted_run_resumes_to_exactly_the_uninterrupted_run(identified_data, tmp_path, uninterrupted,
                                                                  signal_name, step, resume_by):
    stopped = train(identified_data, tmp_path, *interrupt_at(step, signal_name))
    assert stopped.returncode != 0
    run_dir = only_run_dir(tmp_path)
    if signal_name != "SIGKILL":
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
        assert f"Resume with: python train.py ckpt_path={run_dir}/checkpoints/last.ckpt" in stopped.stderr

    resume = {"resume=latest": ["resume=latest"], "ckpt_path": [f"ckpt_path={run_dir}/checkpoints/last.ckpt"],
              "requeue": [f"hydra.run.dir={run_dir}", *interrupt_at(step, signal_name)]}[resume_by]
    resumed = train(identified_data, tmp_path, *resume, NO_INTERRUPT)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert only_run_dir(tmp_path) == run_dir
    assert_same_run(outcome(tmp_path), uninterrupted)


@pytest.fixture(scope="module")
def uninterrupted_ddp(identified_data, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("uninterrupted_ddp")
    returncode, output = train_ddp(identified_data, log_dir)
    assert returncode == 0, output[-3000:]
    return [outcome(log_dir, rank) for rank in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, step, signalled_rank, resume_by", [
    ("SIGTERM", 5, 1, "ckpt_path"),  # epoch 0 (8 steps an epoch on each of the two ranks)
    ("SIGINT", 12, 0, "resume=latest"),  # epoch 1
])
def test_ddp_run_stopped_by_a_signal_to_one_rank_resumes_to_exactly_the_uninterrupted_run(
        identified_data, tmp_path, uninterrupted_ddp, signal_name, step, signalled_rank, resume_by):
    returncode, output = train_ddp(identified_data, tmp_path, *interrupt_at(step, signal_name, signalled_rank))

    assert returncode == 1, output[-3000:]
    run_dir = only_run_dir(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Every rank stops at one and the same step, the signalled one or the next; last.ckpt holds it.
    stopped = [stopped_step(tmp_path / "batches", rank) for rank in (0, 1)]
    assert stopped in ([step, step], [step + 1, step + 1]), stopped
    assert metrics["status"] == "interrupted" and metrics["steps"] == stopped[0]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == stopped[0]
    # Two ranks on this machine: each takes half the usable CPUs, not all of them.
    assert re.findall(r"torch uses (\d+) threads", output) == [str(max(1, usable_cpus() // 2))] * 2

    resume = {"resume=latest": "resume=latest", "ckpt_path": f"ckpt_path={run_dir}/checkpoints/last.ckpt"}[resume_by]
    # As a user resumes it: the run keeps its own settings, trainer=ddp among them.
    returncode, output = run_ddp("--config-dir", str(identified_data.config_dir), "data=tiny", f"log_dir={tmp_path}",
                                 resume, NO_INTERRUPT)

    assert returncode == 0, output[-3000:]
    assert only_run_dir(tmp_path) == run_dir
    for rank in (0, 1):
        assert_same_run(outcome(tmp_path, rank), uninterrupted_ddp[rank])


# Augmented batches: the probe's image ids are then scrambled pixels, but the same scrambled
# pixels step for step if the resumed run draws what the uninterrupted run drew.
AUGMENT = ["data.augment={_target_: mnist_cnn.augment.RandomAffine, rotation_deg: 10, translation: 0.1, "
           + "scale: 0.1, horizontal_flip: true}"]


@pytest.fixture(scope="module")
def uninterrupted_augmented(identified_data, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("uninterrupted_augmented")
    result = train(identified_data, log_dir, *AUGMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    return outcome(log_dir)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, step, resume_by", [
    ("SIGTERM", 20, "ckpt_path"),  # epoch 1, its 6th step
    ("SIGKILL", 37, "requeue"),  # epoch 2, from the step checkpoint at 32
])
def test_interrupted_augmented_run_draws_the_augmentations_of_the_uninterrupted_run(
        identified_data, tmp_path, uninterrupted, uninterrupted_augmented, signal_name, step, resume_by):
    assert uninterrupted_augmented["batches"][0] != uninterrupted["batches"][0]  # augmentation is on
    stopped = train(identified_data, tmp_path, *AUGMENT, *interrupt_at(step, signal_name))
    assert stopped.returncode != 0
    run_dir = only_run_dir(tmp_path)

    resume = ([f"ckpt_path={run_dir}/checkpoints/last.ckpt"] if resume_by == "ckpt_path"
              else [f"hydra.run.dir={run_dir}", *AUGMENT, *interrupt_at(step, signal_name)])
    resumed = train(identified_data, tmp_path, *resume, NO_INTERRUPT)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(outcome(tmp_path), uninterrupted_augmented)


@pytest.mark.slow
def test_requeued_run_keeps_its_config_snapshot_when_the_config_files_changed_meanwhile(
        identified_data, tmp_path, uninterrupted):
    config_dir = tmp_path / "conf"
    shutil.copytree(identified_data.config_dir, config_dir)
    tiny = dataclasses.replace(identified_data, config_dir=config_dir)
    stopped = train(tiny, tmp_path / "logs", *interrupt_at(25, "SIGKILL"))
    assert stopped.returncode != 0
    run_dir = only_run_dir(tmp_path / "logs")
    snapshot = (run_dir / ".hydra" / "config.yaml").read_text()
    # Edited while the job waited in the queue: the requeued job must not pick this up.
    data_config = config_dir / "data" / "tiny.yaml"
    data_config.write_text(data_config.read_text().replace("val_size: 20", "val_size: 40"))

    resumed = train(tiny, tmp_path / "logs", f"hydra.run.dir={run_dir}", *interrupt_at(25, "SIGKILL"), NO_INTERRUPT)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / ".hydra" / "config.yaml").read_text() == snapshot
    assert len(list((run_dir / ".hydra").glob("resumed_*/config.yaml"))) == 1
    assert_same_run(outcome(tmp_path / "logs"), uninterrupted)


@pytest.fixture(scope="module")
def stopped_run(identified_data, tmp_path_factory) -> tuple[Path, Path]:
    """The log folder and run folder of a run stopped by SIGTERM in its second epoch."""
    log_dir = tmp_path_factory.mktemp("stopped")
    assert train(identified_data, log_dir, *interrupt_at(20, "SIGTERM")).returncode != 0
    return log_dir, only_run_dir(log_dir)


@pytest.mark.slow
@pytest.mark.parametrize("override, key", [
    ("trainer.max_epochs=4", "trainer.max_epochs"),  # the cosine schedule was sized for 3
    ("+trainer.limit_train_batches=0.5", "trainer.limit_train_batches"),
    ("data.batch_size=8", "data.batch_size"),
    ("seed=7", "seed"),
    ("optimizer=sgd", "optimizer=adam"),  # another config group
])
def test_resume_refuses_a_change_to_the_run_length_or_data_order(identified_data, stopped_run, override, key):
    log_dir, run_dir = stopped_run
    checkpoint = (run_dir / "checkpoints" / "last.ckpt").read_bytes()

    result = train(identified_data, log_dir, "resume=latest", NO_INTERRUPT, override)

    assert result.returncode == 1
    output = result.stdout + result.stderr
    last_line = output.strip().splitlines()[-1]
    assert key in last_line and "start a new run" in last_line and "Traceback" not in output
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == checkpoint


@pytest.mark.slow
def test_resuming_a_completed_run_says_so_and_changes_nothing(identified_data, tmp_path, uninterrupted):
    finished = train(identified_data, tmp_path)
    assert finished.returncode == 0
    run_dir = only_run_dir(tmp_path)
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}

    result = train(identified_data, tmp_path, "resume=latest")

    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"run {run_dir} is complete (test accuracy {metrics['test/acc']:.2%})" in result.stdout
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before


@pytest.fixture
def stopped_run_dir(tmp_path) -> Path:
    """A run folder with the config snapshot Hydra writes, as resumed_config reads it."""
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save({"seed": 42, "trainer": {"max_epochs": 3, "enable_progress_bar": True},
                    "data": {"batch_size": 16}, "model": {"dropout": 0.0}, "callbacks": {}},
                   tmp_path / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"runtime": {"choices": {"data": "tiny", "model": "cnn"}}}},
                   tmp_path / ".hydra" / "hydra.yaml")
    return tmp_path


def test_resume_applies_overrides_as_hydra_parses_them(stopped_run_dir):
    config = resumed_config(stopped_run_dir, [
        "trainer.enable_progress_bar=false", "model.dropout=0.25", "+callbacks.probe._target_=a.Probe",
        "data=tiny", "ckpt_path=/somewhere/last.ckpt", "hydra.run.dir=/somewhere", "trainer.max_epochs=3",
    ])
    assert config.trainer.enable_progress_bar is False
    assert config.model.dropout == 0.25
    assert config.callbacks.probe._target_ == "a.Probe"
    assert config.trainer.max_epochs == 3 and "ckpt_path" not in config and "hydra" not in config


@pytest.mark.parametrize("override, message", [
    ("+trainer.limit_train_batches=0.5", "the run was started with no trainer.limit_train_batches"),
    ("~seed", "~seed: a resumed run keeps every setting it started with"),
    ("model=wide", "model=wide: the resumed run uses model=cnn, and keeps it"),
    ("trainer.no_such_key=1", "trainer.no_such_key=1: cannot apply it to the resumed run"),
    ("seed=1", "seed=1: the run was started with seed=42"),
])
def test_resume_refuses_what_it_cannot_apply_with_one_clear_line(stopped_run_dir, override, message):
    with pytest.raises(ResumeError, match=re.escape(message)) as error:
        resumed_config(stopped_run_dir, [override])
    assert "\n" not in str(error.value)
