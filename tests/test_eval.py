"""`python eval.py ckpt_path=<file>` re-tests a checkpoint, as a user runs it, on tiny data."""

import json

import pytest
from conftest import (
    TEST_FIGURES,
    assert_readable_pngs,
    only_run_dir,
    read_tensorboard_images,
    run_eval,
)


@pytest.fixture(scope="module")
def evaluated(finished_run, tiny_data, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("eval_logs")
    # the training run used model.channels=[8,16]; eval is not told
    result = run_eval(tiny_data, log_dir, finished_run[0] / "checkpoints" / "best.ckpt")
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run_dir(log_dir, "evals"), result


@pytest.mark.slow
def test_eval_of_a_non_default_checkpoint_reproduces_the_training_runs_test(finished_run, evaluated):
    trained = json.loads((finished_run[0] / "metrics.json").read_text())
    evaluated_metrics = json.loads((evaluated[0] / "metrics.json").read_text())
    for key in ["test/acc", "test_images", "test/confusion_matrix", "test/per_class_acc", "test/misclassified",
                "test/top_confusions"]:
        assert evaluated_metrics[key] == trained[key], key
    assert evaluated_metrics["test/ece"] == pytest.approx(trained["test/ece"], abs=1e-6)
    assert evaluated_metrics["ckpt_path"] == str(finished_run[0] / "checkpoints" / "best.ckpt")
    assert str(evaluated[0]) in evaluated[1].stdout


@pytest.mark.slow
def test_eval_run_folder_holds_the_figures_and_their_events(evaluated):
    run_dir, _ = evaluated
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert_readable_pngs(run_dir / "figures", TEST_FIGURES)
    assert set(read_tensorboard_images(run_dir)) == TEST_FIGURES


@pytest.mark.parametrize("make_checkpoint, message", [
    (lambda path: None, "does not exist"),
    (lambda path: path.write_text("not a checkpoint"), "is not a checkpoint written by train.py"),
], ids=["missing", "text_file"])
@pytest.mark.slow
def test_missing_or_unreadable_checkpoint_is_one_clear_error(tiny_data, tmp_path, make_checkpoint, message):
    checkpoint = tmp_path / "model.ckpt"
    make_checkpoint(checkpoint)
    result = run_eval(tiny_data, tmp_path / "logs", checkpoint)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(checkpoint) in lines[0], result.stderr
    assert message in lines[0]
