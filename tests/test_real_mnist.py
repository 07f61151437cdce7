"""Training on the real MNIST files (fetched once into the project's data/ folder)."""

import json

import pytest

from conftest import only_run_dir
from mnist_cnn.config import PROJECT_ROOT

pytestmark = pytest.mark.real_data


def test_one_epoch_on_real_mnist_reaches_98_percent(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "train.py", f"log_dir={tmp_path}", "trainer=cpu", "trainer.max_epochs=1",
         "trainer.enable_progress_bar=false"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["test_images"] == 10_000
    assert metrics["test/acc"] >= 0.98
