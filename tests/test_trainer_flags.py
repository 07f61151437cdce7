"""The switches a Lightning or Hydra user types to debug or trim a run, and the `debug`
presets, each run as a user types it on tiny data: every one runs to its end."""

import json

import pytest
from conftest import only_run_dir, read_tensorboard, run_train

STEPS_PER_EPOCH = 10  # data=tiny: 320 training images in batches of 32; run_train trains 2 epochs
FAST_DEV_RUN = "trainer.fast_dev_run saves no checkpoint: testing the final weights"

# (overrides as typed, the optimizer steps the run takes (None where time decides),
#  the line that says what the run leaves out)
FLAGS = [
    # flags that crashed, each for its own reason
    (["++trainer.fast_dev_run=true"], 1, FAST_DEV_RUN),
    (["++trainer.overfit_batches=3", "++trainer.max_epochs=2"], 2 * 3, None),
    (["++trainer.enable_checkpointing=false"], 2 * STEPS_PER_EPOCH,
     "checkpointing is off (trainer.enable_checkpointing=false): testing the final weights"),
    (["~logger"], 2 * STEPS_PER_EPOCH, "no logger: this run sends its metrics and hyperparameters to no tracker"),
    (["~callbacks"], 2 * STEPS_PER_EPOCH, None),
    (["++trainer.fast_dev_run=true", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"], 1,
     FAST_DEV_RUN),
    # flags that worked and must keep working
    (["++trainer.profiler=simple"], 2 * STEPS_PER_EPOCH, None),
    (["++trainer.detect_anomaly=true"], 2 * STEPS_PER_EPOCH, None),
    (["++trainer.accumulate_grad_batches=2"], 2 * STEPS_PER_EPOCH // 2, None),
    (["++trainer.deterministic=true"], 2 * STEPS_PER_EPOCH, None),
    (["++trainer.val_check_interval=5"], 2 * STEPS_PER_EPOCH, None),
    (["++trainer.max_time=00:00:00:03"], None, None),
    (["++trainer.check_val_every_n_epoch=2", "++trainer.num_sanity_val_steps=0"], 2 * STEPS_PER_EPOCH, None),
    (["++trainer.precision=bf16-mixed"], 2 * STEPS_PER_EPOCH, None),
    # the debug presets (the command line's trainer.max_epochs=2 wins over a preset's)
    (["debug=fdr"], 1, FAST_DEV_RUN),
    (["debug=overfit"], 2 * 3, None),
    (["debug=profiler"], 2 * STEPS_PER_EPOCH, None),
    (["debug=limit", "experiment=fast", "data.batch_size=32"], 2 * STEPS_PER_EPOCH, None),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, steps, says", FLAGS, ids=[" ".join(flag[0]) for flag in FLAGS])
def test_flag_runs_to_the_end_with_its_summary_line_and_metrics(tiny_data, tmp_path, overrides, steps, says):
    result = run_train(tiny_data, tmp_path, *overrides)

    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    assert result.stdout.splitlines()[-1] == f"run folder: {run_dir}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and 0 <= metrics["test/acc"] <= 1
    # fast_dev_run tests one batch on each rank; every other run the whole test set
    fast_dev_run = says == FAST_DEV_RUN
    assert metrics["test_images"] == (32 * metrics["world_size"] if fast_dev_run else tiny_data.test_size)
    if steps is not None:
        assert metrics["steps"] == steps
    if says:
        assert says in result.stdout + result.stderr


@pytest.mark.slow
def test_without_a_logger_or_checkpoints_the_run_folder_holds_neither(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "~logger", "++trainer.enable_checkpointing=false")

    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    assert not list(run_dir.glob("events.out.tfevents.*")) and not (run_dir / "checkpoints").exists()
    assert "test/acc" in json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_overfit_batches_trains_on_the_same_whole_batches_every_epoch(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "debug=overfit", "trainer.max_epochs=12", "optimizer.lr=0.003")

    assert result.returncode == 0, result.stderr[-3000:]
    assert "turning off the train dataloader shuffling" not in result.stdout + result.stderr
    scalars, _ = read_tensorboard(only_run_dir(tmp_path))
    assert scalars["train/acc_epoch"][-1][1] == 1.0  # three batches of 32, learnt by heart


@pytest.mark.slow
def test_profiler_preset_writes_its_report_into_the_run_folder(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "debug=profiler")

    assert result.returncode == 0, result.stderr[-3000:]
    report = (only_run_dir(tmp_path) / "fit-profile.txt").read_text()
    assert "run_training_batch" in report
