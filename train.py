"""Train the CNN: `python train.py [overrides]`. The app lives in src/mnist_cnn/train.py."""

import gc
from pathlib import Path

from mnist_cnn.train import main

if __name__ == "__main__":
    main(Path(__file__).resolve().parent / "conf")  # this checkout's configs; its logs/ and data/ go with them
    # All is written and closed: the interpreter's final sweep over every object would only delay the exit.
    gc.freeze()
