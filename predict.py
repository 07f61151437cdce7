"""Predict digits: `python predict.py ckpt_path=<file> inputs=<image, [images] or folder>`.
The app lives in src/mnist_cnn/predict.py."""

from mnist_cnn.predict import main

if __name__ == "__main__":
    main()
