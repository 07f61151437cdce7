"""Predict digits: `python predict.py ckpt_path=<file> inputs=<image, [images] or folder>`.
The app lives in src/mnist_cnn/predict.py."""

from pathlib import Path

from mnist_cnn.predict import main

if __name__ == "__main__":
    main(Path(__file__).resolve().parent / "conf")  # this checkout's configs
