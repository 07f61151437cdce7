"""Never lose a run: resume after a crash or a signal, stop on divergence, reject bad settings."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    CONFIG_DIR,
    PROJECT_ROOT,
    make_tiny_data,
    only_run_dir,
    read_tensorboard,
    run_train,
)
from hydra import compose, initialize_config_dir

from mnist_cnn.checkpoint_io import AtomicCheckpointIO
from mnist_cnn.config import (
    ConfigError,
    check_config,
    register_resolvers,
)
from mnist_cnn.resume import new_run_dir

# Long enough epochs (240 steps) that a signal lands inside one, small enough to stay quick.
LONG_EPOCHS = ("data.batch_size=8", "model.channels=[4,8]", "trainer.max_epochs=3", "trainer.log_every_n_steps=10")


@pytest.fixture(scope="module")
def slow_tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("slow_tiny"), train_size=2000, test_size=300, val_size=80)


@pytest.fixture(scope="module")
def uninterrupted(slow_tiny_data, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_train(slow_tiny_data, log_dir, *LONG_EPOCHS)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(log_dir)
    return json.loads((run_dir / "metrics.json").read_text()), read_tensorboard(run_dir)[0]


def start_train(tiny, log_dir: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "train.py", "--config-dir", str(tiny.config_dir), "data=tiny",
               f"log_dir={log_dir}", "trainer=cpu", "trainer.enable_progress_bar=false", *overrides]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_first_epoch(log_dir: Path, process: subprocess.Popen, timeout_s: float = 240) -> Path:
    """Wait until the run saved last.ckpt at the end of its first epoch, then a little into the next."""
    deadline = time.monotonic() + timeout_s
    while not list(log_dir.glob("runs/*/checkpoints/last.ckpt")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never saved last.ckpt"
        time.sleep(0.05)
    time.sleep(0.5)
    return only_run_dir(log_dir)


def assert_one_step_axis(scalars: dict[str, list[tuple[int, float]]]) -> None:
    for tag, events in scalars.items():
        steps = [step for step, _ in events]
        if tag != "epoch":  # Lightning logs `epoch` beside every other metric, repeating steps
            assert steps == sorted(set(steps)), f"{tag} has repeated or out-of-order steps: {steps}"


# Two ways back: naming the checkpoint, or running the same job again in its own folder,
# as a cluster does when it requeues a preempted job.
@pytest.mark.slow
@pytest.mark.parametrize("resume_by", ["ckpt_path", "requeue"])
def test_sigkilled_run_resumes_to_the_same_result_as_an_uninterrupted_run(slow_tiny_data, tmp_path, uninterrupted,
                                                                          resume_by):
    process = start_train(slow_tiny_data, tmp_path, *LONG_EPOCHS)
    run_dir = wait_for_first_epoch(tmp_path, process)
    process.kill()
    process.communicate()
    assert not (run_dir / "metrics.json").exists()
    torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)  # intact despite the kill

    resume = (f"ckpt_path={run_dir}/checkpoints/last.ckpt" if resume_by == "ckpt_path"
              else f"hydra.run.dir={run_dir}")
    result = run_train(slow_tiny_data, tmp_path, *LONG_EPOCHS, resume)

    assert result.returncode == 0, result.stderr[-3000:]
    assert only_run_dir(tmp_path) == run_dir  # same folder, no second run
    resumed = json.loads((run_dir / "metrics.json").read_text())
    expected, expected_scalars = uninterrupted
    assert resumed["steps"] == expected["steps"]
    assert resumed["test/acc"] == pytest.approx(expected["test/acc"], abs=0.001)
    assert resumed["test/loss"] == pytest.approx(expected["test/loss"], rel=1e-3)
    scalars = read_tensorboard(run_dir)[0]
    assert_one_step_axis(scalars)
    assert [s for s, _ in scalars["val/acc"]] == [s for s, _ in expected_scalars["val/acc"]]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_resume_latest_finishes_the_run(slow_tiny_data, tmp_path, uninterrupted, signum):
    process = start_train(slow_tiny_data, tmp_path, *LONG_EPOCHS)
    run_dir = wait_for_first_epoch(tmp_path, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode != 0
    assert f"Resume with: python train.py ckpt_path={run_dir}/checkpoints/last.ckpt" in stderr
    stopped = json.loads((run_dir / "metrics.json").read_text())
    assert stopped["status"] == "interrupted"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == stopped["steps"]  # saved at the step where it stopped

    result = run_train(slow_tiny_data, tmp_path, "resume=latest", "trainer.max_epochs=3")

    assert result.returncode == 0, result.stderr[-3000:]
    finished = json.loads((run_dir / "metrics.json").read_text())
    assert finished["status"] == "completed"
    # Resumed mid-epoch with the next unseen batch: no batch trained twice or skipped.
    assert finished["steps"] == uninterrupted[0]["steps"]
    assert_one_step_axis(read_tensorboard(run_dir)[0])


@pytest.mark.slow
def test_resumed_run_keeps_its_config_and_rejects_another_config_group(tiny_data, tmp_path):
    first = run_train(tiny_data, tmp_path, "model.channels=[4,8]", "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)

    longer = run_train(tiny_data, tmp_path, "resume=latest", "trainer.max_epochs=2")
    assert longer.returncode == 0, longer.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["channels"] == [4, 8]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2

    other_group = run_train(tiny_data, tmp_path, "resume=latest", "optimizer=sgd")
    assert other_group.returncode == 1
    assert "the resumed run uses optimizer=adam" in other_group.stdout + other_group.stderr


@pytest.mark.slow
def test_diverging_loss_stops_with_a_message_naming_the_step(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "optimizer=sgd", "optimizer.lr=1e6", "trainer.max_epochs=3")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    message = next(line for line in output.splitlines() if "training diverged" in line)
    assert "at step" in message and "lower learning rate" in message
    assert "Traceback" not in output
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["epochs"] == 0


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=-1", "optimizer.lr=-1 is not allowed: it must be a number > 0"),
    ("data.batch_size=100000", "data.batch_size=100000 is larger than the training split"),
    ("ckpt_path=/no/such.ckpt", "ckpt_path=/no/such.ckpt does not exist"),
    ("optimizer=adamm", "Could not find 'optimizer/adamm'"),
])
@pytest.mark.slow
def test_bad_settings_fail_with_one_clear_line_and_no_traceback(tiny_data, tmp_path, override, message):
    result = run_train(tiny_data, tmp_path, override)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert message in output
    assert "Traceback" not in output


@pytest.fixture(scope="module")
def composed():
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield lambda *overrides: compose("train", overrides=list(overrides))


@pytest.mark.parametrize("override, key", [
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=fast", "optimizer.lr"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.batch_size=1.5", "data.batch_size"),
    ("data.val_size=0", "data.val_size"),
    ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("model.channels=[]", "model.channels"),
    ("model.channels=[16,0]", "model.channels"),
    ("model.channels=wide", "model.channels"),
    ("model.dropout=2", "model.dropout"),
    ("threads=0", "threads"),
    ("reuse_freed_memory=maybe", "reuse_freed_memory"),
])
def test_config_check_names_the_bad_key(composed, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_config(composed(override))


def test_default_config_passes_the_check(composed):
    check_config(composed())


def test_two_runs_started_in_the_same_second_get_different_folders(tmp_path):
    first, second = new_run_dir(str(tmp_path)), new_run_dir(str(tmp_path))
    assert first != second and Path(first).is_dir() and Path(second).is_dir()


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.save_checkpoint({"step": 1}, path)

    def killed_mid_write(obj, file):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
