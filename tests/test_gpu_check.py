"""scripts/gpu_check.py's CPU dry run: the code a GPU machine runs, on tiny data, a few batches a run."""

import json

import pytest
import torch
from conftest import import_script, run_script


@pytest.mark.slow
def test_dry_run_prints_one_line_per_check_and_the_seed_runs(tiny_data):
    data = [f"data.data_dir={tiny_data.data_dir}", f"data.val_size={tiny_data.val_size}",
            *(f"data.md5.{name}={digest}" for name, digest in tiny_data.md5.items())]
    result = run_script("scripts/gpu_check.py", "--dry-run", "--seeds", "1", "--experiment", "fast", "--", *data,
                        timeout_s=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("device: cpu, torch ")
    assert lines[1].startswith("experiment=fast: ") and "s from process start to exit, test accuracy" in lines[1]
    assert lines[2].startswith("experiment=best, one epoch: ") and "3 steps" in lines[2]
    assert lines[3].startswith("data resident: training split on cpu, ") and "copies in 3 steps" in lines[3]
    assert lines[4].startswith("bf16-mixed ") and "against 32-true " in lines[4]
    assert lines[5].startswith("experiment=fast seed=1: test accuracy ")
    assert lines[6].startswith("experiment=fast, 1 seeds: mean test accuracy ")
    assert len(lines) == 7


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs its real checks")
def test_without_a_gpu_the_real_check_refuses_and_names_the_dry_run():
    result = run_script("scripts/gpu_check.py", timeout_s=120)
    assert result.returncode != 0 and "--dry-run" in result.stderr


def test_resident_data_check_reads_the_size_of_every_host_to_device_copy(tmp_path):
    gpu_check = import_script("gpu_check")
    trace = tmp_path / "trace.json"  # the shape of a CUDA profiler's chrome trace
    trace.write_text(json.dumps({"traceEvents": [
        {"cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "args": {"bytes": 1024}},
        {"cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pageable)", "args": {"bytes": 4}},
        {"cat": "gpu_memcpy", "name": "Memcpy HtoD (Pinned -> Device)", "args": {"bytes": 100352}},
        {"cat": "kernel", "name": "void at::native::vectorized_elementwise_kernel", "args": {}},
    ]}))
    assert gpu_check.host_to_device_copies(trace) == [1024, 100352]
