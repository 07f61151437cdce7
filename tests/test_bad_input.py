"""Every bad value a user can type stops with one line naming the key or the file: exit status 1,
no traceback, and nothing left behind that reads as a result (a metrics.json, a checkpoint,
TensorBoard scalars, a sweep summary). Each runs as typed in a fresh clone, with its defaults."""

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import read_tensorboard, run_in_checkout

pytestmark = pytest.mark.slow


def interrupted_run(checkout: Path, finished_run, request) -> Path:
    """A run in the clone's logs/runs that stopped before it completed: its last.ckpt resumes it."""
    run_dir = checkout / "logs" / "runs" / "2026-01-01_00-00-00"
    shutil.copytree(finished_run[0], run_dir)
    (run_dir / "metrics.json").unlink()
    return run_dir


def truncated_last_checkpoint(checkout: Path, finished_run, request) -> list[str]:
    last = interrupted_run(checkout, finished_run, request) / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    return ["resume=latest"]


def checkpoint_without_training_state(checkout: Path, finished_run, request) -> list[str]:
    last = interrupted_run(checkout, finished_run, request) / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": torch.load(last, weights_only=True)["state_dict"]}, last)
    return [f"ckpt_path={last}"]


def other_architecture_on_resume(checkout: Path, finished_run, request) -> list[str]:
    interrupted_run(checkout, finished_run, request)
    return ["resume=latest", "model.channels=[4,8]"]  # the run trained [8,16]


def resume_of(checkout: Path, finished_run, request) -> list[str]:
    interrupted_run(checkout, finished_run, request)
    return []


def not_a_checkpoint(checkout: Path, finished_run, request) -> list[str]:
    (checkout / "notes.ckpt").write_text("not a checkpoint")
    return ["ckpt_path=notes.ckpt"]


def read_only_log_dir(checkout: Path, finished_run, request) -> list[str]:
    mount_point = checkout / "read-only"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k,ro", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here (needs root): {mounted.stderr.strip()}")
    request.addfinalizer(lambda: subprocess.run(["umount", str(mount_point)], check=True))
    return [f"log_dir={mount_point}"]


def nothing(checkout: Path, finished_run, request) -> list[str]:
    return []


def needs_the_data_files(checkout: Path, finished_run, request) -> list[str]:
    return []  # checked against the files' sizes, once the run has its folder


Prepare = Callable[[Path, tuple, pytest.FixtureRequest], list[str]]
# (the command, the arguments a preparation adds, what the one line names)
CASES: list[tuple[str, Prepare, str]] = [
    ("python train.py model.num_classes=5", nothing, "model.num_classes=5"),
    ("python train.py seed=-1", nothing, "seed=-1"),
    ("python train.py seed=abc", nothing, "seed=abc"),
    ("python train.py trainer.devices=abc", nothing, "trainer.devices=abc"),
    ("python train.py trainer=ddp trainer.devices=0", nothing, "trainer.devices=0"),
    ("python train.py trainer.accelerator=tpu", nothing, "trainer.accelerator=tpu"),
    ("python train.py trainer.precision=fp8", nothing, "trainer.precision=fp8"),
    ("python train.py trainer.max_epochs=0", nothing, "trainer.max_epochs=0"),
    ("python train.py trainer.max_epochs=-1", nothing, "trainer.max_epochs=-1"),
    ("python train.py +trainer.max_epoch=3", nothing, "trainer.max_epoch"),
    ("python train.py trainer.use_distributed_sampler=true", nothing, "trainer.use_distributed_sampler=true"),
    ("python train.py optimizer.lr=-1", nothing, "optimizer.lr=-1"),
    ("python train.py optimizer.lr=fast", nothing, "optimizer.lr=fast"),
    ("python train.py optimizer.weight_decay=-0.1", nothing, "optimizer.weight_decay=-0.1"),
    ("python train.py optimizer=sgd optimizer.momentum=-1", nothing, "optimizer.momentum=-1"),
    ("python train.py +optimizer.momentum=0.9", nothing, "optimizer.momentum"),
    ("python train.py scheduler=onecycle scheduler.pct_start=2", nothing, "scheduler.pct_start=2"),
    ("python train.py callbacks=early_stopping scheduler=onecycle", nothing, "scheduler=onecycle"),
    ("python train.py data.batch_size=0", nothing, "data.batch_size=0"),
    ("python train.py data.batch_size=abc", nothing, "data.batch_size=abc"),
    ("python train.py data.batch_size=100000", needs_the_data_files, "data.batch_size=100000"),
    ("python train.py data.val_size=60000", needs_the_data_files, "data.val_size=60000"),
    ("python train.py data.num_workers=-1", nothing, "data.num_workers=-1"),
    ("python train.py scheduler=onecycle trainer.max_epochs=1 ++trainer.limit_train_batches=4", needs_the_data_files,
     "scheduler.pct_start=0.25"),
    ("python train.py experiment=best data.augment.rotation_deg=400", nothing, "data.augment.rotation_deg=400"),
    ("python train.py experiment=fashion data.augment.interpolation=bicubic", nothing,
     "data.augment.interpolation=bicubic"),
    ("python train.py model.channels=[]", nothing, "model.channels=[]"),
    ("python train.py model.channels=[16,0]", nothing, "model.channels=[16, 0]"),
    ("python train.py model.channels=wide", nothing, "model.channels=wide"),
    ("python train.py model.kernel_size=4", nothing, "model.kernel_size=4"),
    ("python train.py model.dropout=1", nothing, "model.dropout=1"),
    ("python train.py threads=0", nothing, "threads=0"),
    ("python train.py reuse_freed_memory=maybe", nothing, "reuse_freed_memory=maybe"),
    ("python train.py callbacks.model_checkpoint.mode=maximum", nothing, "callbacks.model_checkpoint.mode=maximum"),
    ("python train.py resume=newest", nothing, "resume=newest"),
    ("python train.py resume=latest", nothing, "resume=latest"),
    ("python train.py -m resume=latest", resume_of, "resume=latest"),
    ("python train.py ckpt_path=/no/such.ckpt", nothing, "/no/such.ckpt"),
    ("python train.py", truncated_last_checkpoint, "last.ckpt"),
    ("python train.py", checkpoint_without_training_state, "last.ckpt"),
    ("python train.py", other_architecture_on_resume, "net.classifier.2.weight"),
    ("python train.py debug=fdr", read_only_log_dir, "read-only"),
    ("python eval.py", nothing, "ckpt_path"),
    ("python train.py -m hparams_search=optuna model.dropout=range(5,1)", nothing,
     "model.dropout=range(5,1)"),
    ("python train.py -m hparams_search=optuna hydra.sweeper.heartbeat_interval_s=5 hydra.sweeper.grace_period_s=1",
     nothing, "hydra.sweeper.grace_period_s=1"),
    ("python eval.py", not_a_checkpoint, "notes.ckpt"),
    ("python eval.py ckpt_path=a.ckpt seed=-1", nothing, "seed=-1"),
    ("python predict.py ckpt_path=a.ckpt inputs=", nothing, "inputs="),
    ("python predict.py inputs=digit.png", not_a_checkpoint, "notes.ckpt"),
]


def results_under(logs: Path) -> set[Path]:
    """What a reader takes for a result: a metrics record, a checkpoint, a sweep summary, scalars."""
    found = {path for pattern in ("**/metrics.json", "**/*.ckpt", "**/summary.md") for path in logs.glob(pattern)}
    return found | {path.parent for path in logs.glob("**/events.out.tfevents.*") if read_tensorboard(path.parent)[0]}


@pytest.mark.parametrize("command, prepare, named", CASES, ids=[f"{c[0][7:]} {c[1].__name__}" for c in CASES])
def test_a_bad_value_stops_with_one_line_naming_it(user_checkout, finished_run, request, command, prepare, named):
    arguments = command.split() + prepare(user_checkout, finished_run, request)
    logs = user_checkout / "logs"
    results_before = results_under(logs)

    result = run_in_checkout(user_checkout, arguments, timeout_s=300)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    error_lines = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1, output[-3000:]
    assert named in error_lines[0]
    assert results_under(logs) == results_before
    if prepare is nothing:  # refused before the run's folder was made
        assert not list(logs.glob("*/*")), list(logs.glob("*/*"))
