"""Never lose a run: resume after a crash or a signal, stop on divergence, reject bad settings."""

import json
from pathlib import Path

import pytest
import torch
from conftest import only_run_dir, run_train
from hydra import compose, initialize_config_dir

from mnist_cnn.checkpoint_io import AtomicCheckpointIO
from mnist_cnn.config import (
    CONFIG_DIR,
    ConfigError,
    check_config,
    register_resolvers,
)
from mnist_cnn.resume import new_run_dir


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
