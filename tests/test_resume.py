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
    NO_INTERRUPT,
    PROBES,
    PROJECT_ROOT,
    interrupt_at,
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
from mnist_cnn.run_checkpoint import RunCheckpoint
from mnist_cnn.train import usable_cpus

# 240 training images in batches of 16: 15 steps an epoch, 45 in all; a step checkpoint every 8.
RUN = ("data.batch_size=16", "model.channels=[4,8]", "trainer.max_epochs=3", "trainer.log_every_n_steps=1",
       "callbacks.learning_rate_monitor.logging_interval=step")
STEP_CHECKPOINTS = "+callbacks.model_checkpoint.every_n_train_steps=8"


@pytest.fixture(scope="module")
def identified_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("resume_data"), train_size=260, test_size=91, val_size=20)


def recorded(log_dir: Path) -> list[str]:
    return ["+callbacks.record._target_=run_probes.RecordTrainedBatches", f"+callbacks.record.path={log_dir}/batches"]


def train(tiny, log_dir: Path, *overrides: str, step_checkpoints: bool = True):
    """The run, recording its batches; with a checkpoint every 8 steps unless `step_checkpoints` is
    false (the default config: last.ckpt at the end of each epoch only)."""
    checkpoints = [STEP_CHECKPOINTS] if step_checkpoints else []
    return run_train(tiny, log_dir, *RUN, *checkpoints, *recorded(log_dir), *overrides, env=PROBES)


def train_ddp(tiny, log_dir: Path, *overrides: str) -> tuple[int | None, str]:
    """`train` on two CPU ranks: (exit code, output), or (None, output) if it hung."""
    return run_ddp(*train_arguments(tiny, log_dir, *RUN, STEP_CHECKPOINTS, *recorded(log_dir), *DDP, *overrides))


def run_ddp(*arguments: str) -> tuple[int | None, str]:
    """`python train.py <arguments>` with the probes, killed with all its ranks if it hangs."""
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), *arguments]
    return run_until_exit(command, timeout_s=240, env={**os.environ, **PROBES})


def outcome(log_dir: Path, rank: int = 0) -> dict:
    """What the run in `log_dir` computed, as rank `rank` saw it."""
    run_dir = only_run_dir(log_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    probes = log_dir / "batches"
    return {"batches": trained_batches(probes, rank), "weights": trained_weights(probes, rank),
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
    timeless = [{key: value for key, value in run["metrics"].items() if key != "wall_time_s"}
                for run in (resumed, expected)]
    assert timeless[0] == timeless[1]
    # Every tag the run writes, each once per step: one step axis, the same values.
    assert resumed["scalars"].keys() == expected["scalars"].keys()
    for tag, points in expected["scalars"].items():
        assert resumed["scalars"][tag] == points, tag


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


# Dropout and augmented batches: the probe's image ids are then scrambled pixels, but the same
# scrambled pixels step for step if the resumed run draws what the uninterrupted run drew; and
# the same weights only if it drew the same dropout masks.
REGULARIZED = ["model.dropout=0.25", "data.augment={_target_: mnist_cnn.augment.RandomAffine, rotation_deg: 10, "
               + "translation: 0.1, scale: 0.1, horizontal_flip: true}"]


@pytest.fixture(scope="module")
def uninterrupted_regularized(identified_data, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("uninterrupted_regularized")
    result = train(identified_data, log_dir, *REGULARIZED)
    assert result.returncode == 0, result.stderr[-3000:]
    return outcome(log_dir)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, step, resume_by", [
    ("SIGTERM", 20, "ckpt_path"),  # epoch 1, its 6th step
    ("SIGKILL", 37, "requeue"),  # epoch 2, from the step checkpoint at 32
])
def test_interrupted_run_with_dropout_and_augmentation_draws_what_the_uninterrupted_run_drew(
        identified_data, tmp_path, uninterrupted, uninterrupted_regularized, signal_name, step, resume_by):
    assert uninterrupted_regularized["batches"][0] != uninterrupted["batches"][0]  # augmentation is on
    stopped = train(identified_data, tmp_path, *REGULARIZED, *interrupt_at(step, signal_name))
    assert stopped.returncode != 0
    run_dir = only_run_dir(tmp_path)

    resume = ([f"ckpt_path={run_dir}/checkpoints/last.ckpt"] if resume_by == "ckpt_path"
              else [f"hydra.run.dir={run_dir}", *REGULARIZED, *interrupt_at(step, signal_name)])
    resumed = train(identified_data, tmp_path, *resume, NO_INTERRUPT)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(outcome(tmp_path), uninterrupted_regularized)


@pytest.fixture(scope="module")
def uninterrupted_epoch_checkpoints(identified_data, tmp_path_factory):
    """The run with the default checkpoints: last.ckpt and best.ckpt at each validation only
    (step checkpoints also choose best.ckpt at other moments, so the test may test another model)."""
    log_dir = tmp_path_factory.mktemp("uninterrupted_epoch_checkpoints")
    result = train(identified_data, log_dir, step_checkpoints=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return outcome(log_dir)


@pytest.mark.slow
def test_run_killed_in_the_default_config_resumes_from_the_last_epoch_end_to_the_uninterrupted_run(
        identified_data, tmp_path, uninterrupted_epoch_checkpoints):
    stopped = train(identified_data, tmp_path, *interrupt_at(20, "SIGKILL"), step_checkpoints=False)
    assert stopped.returncode != 0
    run_dir = only_run_dir(tmp_path)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 15  # epoch 0's end

    resumed = train(identified_data, tmp_path, "resume=latest", NO_INTERRUPT, step_checkpoints=False)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(outcome(tmp_path), uninterrupted_epoch_checkpoints)


# Early stopping after 2 validations in a row without a rise, in 6 epochs. With min_delta=1 no
# rise counts after the first validation's (val/acc is at most 1): the run stops after epoch 2,
# its third (stopped_epoch counts from 1, as epochs does).
EARLY_STOPPING = ("callbacks=early_stopping", "callbacks.early_stopping.patience=2",
                  "callbacks.early_stopping.min_delta=1", "trainer.max_epochs=6")


@pytest.fixture(scope="module")
def uninterrupted_early_stopping(identified_data, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("uninterrupted_early_stopping")
    result = train(identified_data, log_dir, *EARLY_STOPPING, step_checkpoints=False)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = outcome(log_dir)
    assert expected["metrics"]["stopped_early"] and expected["metrics"]["stopped_epoch"] == 3
    return expected


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_early_stopping_resumed_stops_after_the_epoch_the_uninterrupted_run_stopped_after(
        identified_data, tmp_path, uninterrupted_early_stopping, signal_name):
    # Step 37 is in epoch 2, after epoch 1's validation, the first without a rise; the last.ckpt
    # that SIGKILL leaves, saved at epoch 1's end, has counted it.
    stopped = train(identified_data, tmp_path, *EARLY_STOPPING, *interrupt_at(37, signal_name),
                    step_checkpoints=False)
    assert stopped.returncode != 0

    resumed = train(identified_data, tmp_path, "resume=latest", NO_INTERRUPT, *EARLY_STOPPING, step_checkpoints=False)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(outcome(tmp_path), uninterrupted_early_stopping)


def hparams_records(run_dir: Path) -> int:
    """How many times the run's event files record its hyperparameters."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return sum(value.tag == "_hparams_/session_start_info"
               for events in run_dir.glob("events.out.tfevents.*")
               for event in EventFileLoader(str(events)).Load() for value in event.summary.value)


@pytest.mark.slow
def test_job_requeued_before_its_first_checkpoint_starts_its_logs_afresh(identified_data, tmp_path, uninterrupted):
    stopped = train(identified_data, tmp_path, *interrupt_at(5, "SIGKILL"))
    assert stopped.returncode != 0
    run_dir = only_run_dir(tmp_path)
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()

    requeued = train(identified_data, tmp_path, f"hydra.run.dir={run_dir}", *interrupt_at(5, "SIGKILL"), NO_INTERRUPT)

    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert_same_run(outcome(tmp_path), uninterrupted)
    assert hparams_records(run_dir) == 1


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
    ("data.seed=7", "data.seed"),  # another train/validation split
    ("optimizer.lr=0.01", "optimizer.lr"),  # the checkpoint's optimizer state would replace it
    ("optimizer.weight_decay=0.1", "optimizer.weight_decay"),
    ("scheduler.eta_min=0.0001", "scheduler.eta_min"),
    ("model.dropout=0.5", "model.dropout"),
    (REGULARIZED[1], "data.augment"),  # the stopped run trained without augmentation
    ("callbacks.model_checkpoint.monitor=val/loss", "callbacks.model_checkpoint.monitor"),
    ("callbacks.model_checkpoint.mode=min", "callbacks.model_checkpoint.mode"),
    ("optimizer=sgd", "optimizer=adam"),  # another config group
])
def test_resume_refuses_a_change_to_what_the_checkpoint_depends_on(identified_data, stopped_run, override, key):
    log_dir, run_dir = stopped_run
    checkpoint = (run_dir / "checkpoints" / "last.ckpt").read_bytes()

    result = train(identified_data, log_dir, "resume=latest", NO_INTERRUPT, override)

    assert result.returncode == 1
    output = result.stdout + result.stderr
    last_line = output.strip().splitlines()[-1]
    assert key in last_line and "start a new run" in last_line and "Traceback" not in output
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("override", ["trainer.log_every_n_steps=5", "callbacks.stop_on_divergence.max_loss=0.01"])
def test_resume_applies_an_override_of_how_the_run_is_logged_or_watched(identified_data, tmp_path, override):
    assert train(identified_data, tmp_path, *interrupt_at(20, "SIGTERM")).returncode != 0
    run_dir = only_run_dir(tmp_path)

    resumed = train(identified_data, tmp_path, "resume=latest", NO_INTERRUPT, override)

    if override.startswith("trainer.log_every_n_steps"):
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        logged_steps = [step for step, _ in read_tensorboard(run_dir)[0]["train/loss_step"]]
        assert logged_steps == list(range(20)) + [24, 29, 34, 39, 44]  # every step, then every 5th
    else:  # any real loss is far above 0.01: the resumed run stops at its first check
        assert resumed.returncode == 1
        assert "training diverged: the loss became" in resumed.stdout + resumed.stderr
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_resume_that_checkpoints_more_often_keeps_the_best_checkpoint_and_its_score(identified_data, tmp_path):
    """every_n_train_steps is accepted on resume (the README suggests it) and takes effect; the
    best-so-far record survives it, so a worse model after the resume does not replace best.ckpt."""
    assert train(identified_data, tmp_path, *interrupt_at(33, "SIGTERM")).returncode != 0  # 2 validations done
    run_dir = only_run_dir(tmp_path)
    worsen = ["+callbacks.worsen._target_=faults.ZeroWeightsAtStep", "+callbacks.worsen.step=34"]
    resumed = train(identified_data, tmp_path, "resume=latest", "callbacks.model_checkpoint.every_n_train_steps=4",
                    *worsen, *interrupt_at(38, "SIGKILL"))
    assert resumed.returncode != 0
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 36  # every 4 steps now (every 8 before)

    finished = train(identified_data, tmp_path, "resume=latest", NO_INTERRUPT)

    assert finished.returncode == 0, finished.stderr[-3000:]
    val_acc = dict(read_tensorboard(run_dir)[0]["val/acc"])  # step -> accuracy, once per epoch
    best_before_resume = max(val_acc[14], val_acc[29])
    assert val_acc[44] < best_before_resume  # the zeroed net got worse
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/acc_best"] == pytest.approx(best_before_resume)
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["global_step"] <= 33 and any(weights.abs().sum() > 0 for weights in best["state_dict"].values())


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
                    "data": {"batch_size": 16}, "model": {"dropout": 0.0},
                    "callbacks": {"early_stopping": {"patience": 3}}},
                   tmp_path / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"runtime": {"choices": {"data": "tiny", "model": "cnn"}}}},
                   tmp_path / ".hydra" / "hydra.yaml")
    return tmp_path


def test_resume_applies_overrides_as_hydra_parses_them(stopped_run_dir):
    config = resumed_config(stopped_run_dir, [
        "trainer.enable_progress_bar=false", "+callbacks.probe._target_=a.Probe",
        "data=tiny", "ckpt_path=/somewhere/last.ckpt", "hydra.run.dir=/somewhere", "trainer.max_epochs=3",
    ])
    assert config.trainer.enable_progress_bar is False
    assert config.callbacks.probe._target_ == "a.Probe"
    assert config.trainer.max_epochs == 3 and "ckpt_path" not in config and "hydra" not in config


@pytest.mark.parametrize("override, message", [
    ("+trainer.limit_train_batches=0.5", "trainer.limit_train_batches=0.5 (the run was started without it)"),
    ("~seed", "~seed: a resumed run keeps every setting it started with"),
    ("model=wide", "model=wide: the resumed run uses model=cnn, and keeps it"),
    ("trainer.no_such_key=1", "trainer.no_such_key=1: cannot apply it to the resumed run"),
    ("seed=1", "seed=1 (the run was started with 42): a resumed run keeps"),
    ("model.dropout=0.5", "model.dropout=0.5 (the run was started with 0.0)"),
    ("callbacks.early_stopping.patience=5", "callbacks.early_stopping.patience=5 (the run was started with 3)"),
])
def test_resume_refuses_what_it_cannot_apply_with_one_clear_line(stopped_run_dir, override, message):
    with pytest.raises(ResumeError, match=re.escape(message)) as error:
        resumed_config(stopped_run_dir, [override])
    assert "\n" not in str(error.value)


def test_checkpoint_callback_reads_the_best_record_of_a_checkpoint_saved_under_lightnings_own_key(tmp_path):
    lightning_key = ("ModelCheckpoint{'monitor': 'val/acc', 'mode': 'max', 'every_n_train_steps': 8, "
                     "'every_n_epochs': 0, 'train_time_interval': None}")
    record = {"dirpath": str(tmp_path), "best_model_score": torch.tensor(0.75),
              "best_model_path": str(tmp_path / "best.ckpt")}
    callback = RunCheckpoint(dirpath=str(tmp_path), monitor="val/acc", mode="max", every_n_train_steps=4)

    callback.on_load_checkpoint(None, None, {"callbacks": {lightning_key: record}})

    assert callback.best_model_score == torch.tensor(0.75) and callback.best_model_path == record["best_model_path"]
    other_measure = RunCheckpoint(dirpath=str(tmp_path), monitor="val/loss", mode="min")
    other_measure.on_load_checkpoint(None, None, {"callbacks": {lightning_key: record}})
    assert other_measure.best_model_score is None
