"""Export a checkpoint for onnxruntime or torch alone: `python export.py ckpt_path=<file> [format=torchscript]`.
The app is mnist_cnn.apps.export, which imports the export (src/mnist_cnn/export.py) only once the
config is composed."""

from pathlib import Path

from mnist_cnn.apps import export
from mnist_cnn.config import run_app

if __name__ == "__main__":
    run_app(export, Path(__file__).resolve().parent / "conf", "export")  # this checkout's configs
