"""The commands that train nothing answer before torch is imported: Hydra composes the config and
answers --help, --cfg and tab completion, and the training modules load only when a task runs.
What each process imports is read from Python's own report (`-X importtime`), not timed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT

# What training, evaluation, prediction and export import, none of which --help, --cfg or a TAB needs.
HEAVY = {"torch", "lightning", "lightning_fabric", "torchmetrics", "torchvision", "matplotlib", "numpy", "PIL",
         "optuna", "scipy"}


def imported_packages(arguments: list[str], env: dict | None = None) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level packages `python <arguments>` imports, by `-X importtime`, and how it ended."""
    result = subprocess.run([sys.executable, "-X", "importtime", *arguments], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, **(env or {})})
    report = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {name.split(".")[0] for name in report}, result


@pytest.mark.parametrize("arguments, env, answer", [
    (["train.py", "--help"], {}, "== Configuration groups =="),
    (["train.py", "--cfg", "job"], {}, "model_checkpoint:"),
    (["train.py", "-sc", "query=bash"], {"COMP_LINE": "python train.py data="}, "data=fashion_mnist"),
    (["eval.py", "--help"], {}, "== Configuration groups =="),
    (["eval.py", "--cfg", "job"], {}, "ckpt_path: ???"),
    (["predict.py", "--help"], {}, "== Configuration groups =="),
    (["predict.py", "--cfg", "job"], {}, "inputs: ???"),
    (["export.py", "--help"], {}, "== Configuration groups =="),
    (["export.py", "--cfg", "job"], {}, "ckpt_path: ???"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_help_config_and_completion_answer_without_importing_torch(arguments, env, answer):
    packages, result = imported_packages(arguments, env)

    assert result.returncode == 0, result.stderr[-3000:]
    assert answer in result.stdout
    assert not packages & HEAVY, sorted(packages & HEAVY)


def test_the_import_report_sees_torch_when_training_code_loads():
    packages, result = imported_packages(["-c", "import mnist_cnn.train"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"torch", "lightning"} <= packages


def test_bash_completion_installed_as_the_readme_says_completes_config_options():
    [install] = [line.split("#")[0].strip() for line in (PROJECT_ROOT / "README.md").read_text().splitlines()
                 if "-sc install=bash" in line]
    # What bash does on TAB after `python train.py data=`: the installed function fills COMPREPLY.
    tab = 'COMP_LINE="python train.py data="; COMP_POINT=${#COMP_LINE}; COMP_CWORD=2; hydra_bash_completion'
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `python` is this environment's
    result = subprocess.run(["bash", "-c", f'{install}\n{tab}\nprintf "%s\\n" "${{COMPREPLY[@]}}"'], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": path})

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["data=fashion_mnist", "data=mnist"]
