"""Test a checkpoint: `python eval.py ckpt_path=<file> [overrides]`. The app lives in src/mnist_cnn/evaluate.py."""

import gc

from mnist_cnn.evaluate import main

if __name__ == "__main__":
    main()
    # All is written and closed: the interpreter's final sweep over every object would only delay the exit.
    gc.freeze()
