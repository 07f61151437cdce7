"""Train the CNN: `python train.py [overrides]`. The app lives in src/mnist_cnn/train.py."""

from mnist_cnn.train import main

if __name__ == "__main__":
    main()
