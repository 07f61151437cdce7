"""Test a checkpoint: `python eval.py ckpt_path=<file> [overrides]`. The app is mnist_cnn.apps.evaluate,
which imports the evaluation (src/mnist_cnn/evaluate.py) only once the config is composed."""

import gc
from pathlib import Path

from mnist_cnn.apps import evaluate
from mnist_cnn.config import run_app

if __name__ == "__main__":
    # This checkout's configs; its logs/ and data/ go with them.
    run_app(evaluate, Path(__file__).resolve().parent / "conf", "eval")
    # All is written and closed: the interpreter's final sweep over every object would only delay the exit.
    gc.freeze()
