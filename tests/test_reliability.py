"""Never lose a run: resume after a crash or a signal, stop on divergence, reject bad settings."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONFIG_DIR, only_run_dir, run_train, run_until_exit
from hydra import compose, initialize_config_dir
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import DictConfig, ListConfig

from mnist_cnn.checkpoint_io import AtomicCheckpointIO, DiskFullError
from mnist_cnn.config import register_resolvers
from mnist_cnn.resume import new_run_dir
from mnist_cnn.schema import (
    CLASS_RULES,
    ENTRY_RULES,
    HYDRA_KEYS,
    ConfigError,
    check_config,
)
from mnist_cnn.stopping import CheckpointOnInterrupt, StopOnDivergence, TrainingDiverged


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
    ("trainer.use_distributed_sampler=true", "trainer.use_distributed_sampler"),
    ("model.channels=[8,8,8,8,8]", "model.channels"),
    ("model.kernel_size=29", "model.kernel_size"),
    ("model.kernel_size=4", "model.kernel_size"),
    ("model.convs_per_block=0", "model.convs_per_block"),
    ("model.hidden_units=0", "model.hidden_units"),
    ("experiment=best data.augment.rotation_deg=-1", "data.augment.rotation_deg"),
    ("experiment=best data.augment.translation=1.0", "data.augment.translation"),
    ("experiment=best data.augment.scale=1.5", "data.augment.scale"),
    ("experiment=fashion data.augment.interpolation=bicubic", "data.augment.interpolation"),
    ("+data.augment.rotation=10", "data.augment"),
])
def test_config_check_names_the_bad_key(composed, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_config(composed(*override.split()))


def objects_in(node, key: str = ""):
    """(where, target, settings) of every object a composed config builds, nested ones included."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield key, node._target_, [name for name in node if name not in HYDRA_KEYS]
        for name in node:
            yield from objects_in(node._get_node(name), f"{key}.{name}".lstrip("."))
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node):
            yield from objects_in(item, f"{key}[{index}]")


@pytest.mark.parametrize("option", ["data=fashion_mnist", "optimizer=adamw", "optimizer=sgd", "scheduler=onecycle",
                                    "trainer=ddp", "trainer=gpu", "debug=profiler", "hparams_search=optuna",
                                    "callbacks=early_stopping"])
def test_every_setting_the_configs_set_has_a_rule(composed, option):
    for preset in sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml")):
        for where, target, settings in objects_in(composed(f"experiment={preset}", option)):
            assert target in CLASS_RULES, f"{where}: no rules for {target}"
            unruled = set(settings) - set(CLASS_RULES[target])
            assert not unruled, f"{where} ({target}): {unruled} have no rule"
    assert set(composed()) - {"data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks"} \
        <= set(ENTRY_RULES)


@pytest.mark.parametrize("preset", sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml")))
@pytest.mark.parametrize("option", ["data=fashion_mnist", "optimizer=sgd", "scheduler=onecycle", "trainer=ddp",
                                    "debug=profiler", "hparams_search=optuna"])
def test_every_preset_and_option_passes_the_check(composed, preset, option):
    check_config(composed(f"experiment={preset}", option))


def test_default_config_passes_the_check(composed):
    check_config(composed())


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_no_epoch_limit_is_refused_for_a_schedule_that_spans_the_run(composed, scheduler):
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs=-1 .*scheduler=none"):
        check_config(composed("trainer.max_epochs=-1", f"scheduler={scheduler}"))
    check_config(composed("trainer.max_epochs=-1", f"scheduler={scheduler}", "+trainer.max_steps=100"))
    check_config(composed("trainer.max_epochs=-1", "scheduler=none"))


def test_early_stopping_is_refused_with_a_one_cycle_schedule_and_named_with_the_fix(composed):
    with pytest.raises(ConfigError, match=r"callbacks\.early_stopping .*scheduler=onecycle.*scheduler=cosine"):
        check_config(composed("callbacks=early_stopping", "scheduler=onecycle"))
    check_config(composed("callbacks=early_stopping"))  # cosine: cut short, documented
    check_config(composed("callbacks=early_stopping", "scheduler=none"))


def test_two_runs_started_in_the_same_second_get_different_folders(tmp_path):
    first, second = new_run_dir(str(tmp_path)), new_run_dir(str(tmp_path))
    assert first != second and Path(first).is_dir() and Path(second).is_dir()


def test_an_exceeded_disk_quota_is_named_like_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.save_checkpoint({"step": 1}, path)

    def quota_exceeded(file_descriptor):  # as a cluster's shared file system answers a user over quota
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "fsync", quota_exceeded)
    with pytest.raises(DiskFullError, match=f"disk quota exceeded while writing {path}; "
                                            f"the last complete checkpoint is {path}"):
        checkpoint_io.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert not list(tmp_path.glob(".*partial"))


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.save_checkpoint({"step": 1}, path)

    def killed_before_the_data_reached_the_disk(file_descriptor):
        raise KeyboardInterrupt  # the new checkpoint is written to the temporary file, not yet synced

    monkeypatch.setattr(os, "fsync", killed_before_the_data_reached_the_disk)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_finite_explosion_of_the_loss_is_divergence_too(tiny_data, tmp_path):
    # Adam at lr 1e4: the loss leaps to about 1e16 and stays finite; left alone, the run
    # would end "completed" with whatever weights it lands on.
    result = run_train(tiny_data, tmp_path, "optimizer.lr=1e4")

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "training diverged: the loss became" in output and "Traceback" not in output
    assert json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("accumulation", [[], ["+trainer.accumulate_grad_batches=4"]])
def test_max_loss_of_the_callback_sets_the_limit(tiny_data, tmp_path, accumulation):
    # A working run's first losses (about ln 10 = 2.3) are above a limit of 1, also when
    # Lightning hands the callback a quarter of each loss, accumulating 4 batches per step.
    result = run_train(tiny_data, tmp_path, "callbacks.stop_on_divergence.max_loss=1", *accumulation)

    assert result.returncode == 1
    assert "training diverged: the loss became" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("bad_rank", [0, 1])
def test_divergence_on_one_ddp_rank_stops_every_rank(tiny_data, tmp_path, bad_rank):
    # 5 steps per rank and epoch; step 4 is the epoch's last, where every rank checks the loss.
    # Only `bad_rank` sees a NaN loss there: the healthy rank must stop too, not wait for it.
    poison = ("+callbacks.nan_weights._target_=faults.NanWeightsOnOneRank",
              f"+callbacks.nan_weights.rank={bad_rank}", "+callbacks.nan_weights.step=4")
    command = [sys.executable, "train.py", "--config-dir", str(tiny_data.config_dir), "data=tiny",
               f"log_dir={tmp_path}", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
               "trainer.max_epochs=2", "trainer.enable_progress_bar=false", *poison]
    tests_dir = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))}

    returncode, output = run_until_exit(command, timeout_s=120, env=env)

    assert returncode == 1, output[-3000:]
    assert "training diverged: the loss became nan at step 5" in output
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["steps"] == 5


class NanLossModel(BoringModel):
    def training_step(self, batch, batch_idx):
        return {"loss": super().training_step(batch, batch_idx)["loss"] * float("nan")}


class BuggyModel(BoringModel):
    def training_step(self, batch, batch_idx):
        raise ZeroDivisionError("a bug in the training step")


@pytest.mark.parametrize("model, error", [(NanLossModel, TrainingDiverged), (BuggyModel, ZeroDivisionError)])
def test_ctrl_c_acts_as_usual_again_after_a_fit_that_raised(tmp_path, model, error):
    original = signal.getsignal(signal.SIGINT)
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[CheckpointOnInterrupt(), StopOnDivergence(check_every_n_steps=1, max_loss=100)])

    with pytest.raises(error):
        trainer.fit(model())

    assert signal.getsignal(signal.SIGINT) is original


def mounted_disk(folder: Path, size: str):
    """A tmpfs of `size` at `folder`, unmounted afterwards."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1000 KB file system: room for the first files of a run and one checkpoint (610 KB), not two."""
    yield from mounted_disk(tmp_path / "disk", "1000k")


@pytest.fixture
def tinier_disk(tmp_path):
    """A 700 KB file system: the first checkpoint does not fit beside a run's first files."""
    yield from mounted_disk(tmp_path / "disk", "700k")


@pytest.mark.slow
def test_a_full_disk_is_named_with_the_last_complete_checkpoint(tiny_data, tiny_disk):
    result = run_train(tiny_data, tiny_disk)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    message = next(line for line in output.splitlines() if "no space left on device" in line)
    writing, complete = re.fullmatch(r".*no space left on device while writing (\S+\.ckpt); "
                                     r"the last complete checkpoint is (\S+\.ckpt)", message).groups()
    assert Path(writing).parent == Path(complete).parent == only_run_dir(tiny_disk) / "checkpoints"
    assert torch.load(complete, weights_only=True)["global_step"] > 0  # whole, and loads
    assert not list(Path(complete).parent.glob(".*partial"))
    assert json.loads((only_run_dir(tiny_disk) / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_a_disk_too_full_for_the_run_record_ends_with_the_checkpoint_line(tiny_data, tinier_disk):
    result = run_train(tiny_data, tinier_disk)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    last_line = result.stdout.strip().splitlines()[-1]  # the log's lines; Lightning's tables go to stderr
    assert re.fullmatch(r".*no space left on device while writing \S+\.ckpt; (the last complete checkpoint is "
                        r"\S+\.ckpt|no checkpoint was completed yet)", last_line), last_line


@pytest.mark.slow
def test_a_full_disk_under_ddp_stops_every_rank(tiny_data, tiny_disk):
    # Only rank 0 writes checkpoints: the other rank must not wait for it forever.
    command = [sys.executable, "train.py", "--config-dir", str(tiny_data.config_dir), "data=tiny",
               f"log_dir={tiny_disk}", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
               "trainer.max_epochs=2", "trainer.enable_progress_bar=false"]

    returncode, output = run_until_exit(command, timeout_s=120, env=dict(os.environ))

    assert returncode == 1, output[-3000:]
    assert "no space left on device while writing" in output
    assert json.loads((only_run_dir(tiny_disk) / "metrics.json").read_text())["status"] == "failed"
