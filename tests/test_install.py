"""However the package is installed, `python train.py` runs on the configs of the checkout it
belongs to and writes into that checkout's logs/: an editable install, a non-editable one,
and a second clone that shares the first one's environment."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, copy_checkout, only_run_dir

pytestmark = pytest.mark.slow


def train_debug(checkout: Path, tiny_data, python_path: Path) -> subprocess.CompletedProcess:
    """`python train.py trainer=debug` in `checkout`, importing mnist_cnn from `python_path`;
    no log_dir override: the run goes wherever the checkout's configs send it."""
    return subprocess.run(
        [sys.executable, "train.py", "--config-dir", str(tiny_data.config_dir), "data=tiny", "trainer=debug",
         "trainer.enable_progress_bar=false"],
        cwd=checkout, check=False, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(python_path)})


def runs_of(checkout: Path) -> set[Path]:
    return set((checkout / "logs" / "runs").glob("*"))


def assert_ran_into_its_own_logs(result: subprocess.CompletedProcess, checkout: Path) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(checkout / "logs")
    assert (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert f"run folder: {run_dir}" in result.stdout


def test_editable_install_runs_into_its_checkouts_logs(tiny_data, tmp_path):
    # An editable install puts the checkout's src/ on the path, as PYTHONPATH does here.
    checkout = copy_checkout(tmp_path / "clone")
    assert_ran_into_its_own_logs(train_debug(checkout, tiny_data, checkout / "src"), checkout)


def test_non_editable_install_finds_the_configs_of_the_script_it_runs(tiny_data, tmp_path):
    checkout = copy_checkout(tmp_path / "clone")
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--target", str(site), str(checkout)], check=False, capture_output=True, text=True,
                             timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(checkout / "src")  # the package comes from the installed copy only
    assert (site / "mnist_cnn" / "train.py").is_file() and not (site / "conf").exists()

    assert_ran_into_its_own_logs(train_debug(checkout, tiny_data, site), checkout)


def test_second_clone_sharing_the_first_ones_package_runs_into_its_own_logs(tiny_data, tmp_path):
    second = copy_checkout(tmp_path / "second")
    runs_before = runs_of(PROJECT_ROOT)

    result = train_debug(second, tiny_data, PROJECT_ROOT / "src")  # mnist_cnn of the first checkout

    assert_ran_into_its_own_logs(result, second)
    assert runs_of(PROJECT_ROOT) == runs_before
