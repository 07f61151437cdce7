"""Train the CNN: `python train.py [overrides]`. The app is mnist_cnn.apps.train, which imports
the training (src/mnist_cnn/train.py) only once the config is composed."""

import gc
from pathlib import Path

from mnist_cnn.apps import train
from mnist_cnn.config import run_app

if __name__ == "__main__":
    # This checkout's configs; its logs/ and data/ go with them.
    run_app(train, Path(__file__).resolve().parent / "conf", "train")
    # All is written and closed: the interpreter's final sweep over every object would only delay the exit.
    gc.freeze()
