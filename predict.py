"""Predict digits: `python predict.py ckpt_path=<file> inputs=<image, [images] or folder>`.
The app is mnist_cnn.apps.predict, which imports the prediction (src/mnist_cnn/predict.py) only
once the config is composed."""

from pathlib import Path

from mnist_cnn.apps import predict
from mnist_cnn.config import run_app

if __name__ == "__main__":
    run_app(predict, Path(__file__).resolve().parent / "conf", "predict")  # this checkout's configs
