"""Test a checkpoint: `python eval.py ckpt_path=<file> [overrides]`. The app lives in src/mnist_cnn/evaluate.py."""

from mnist_cnn.evaluate import main

if __name__ == "__main__":
    main()
