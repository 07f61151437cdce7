"""The Hydra apps that train.py, eval.py, predict.py and export.py run. Hydra composes the config, and
answers --help, --cfg and tab completion, before it calls a task; each task imports its
module, and with it torch and Lightning, only then, so those answers never wait for them."""

from omegaconf import DictConfig

from mnist_cnn.config import register_resolvers

# At import: a sweep's worker imports this module to unpickle its task, and resolves the job's
# folder with these resolvers before the task runs.
register_resolvers()


def train(cfg: DictConfig) -> float | None:
    from mnist_cnn.train import run

    return run(cfg)


def evaluate(cfg: DictConfig) -> None:
    from mnist_cnn.evaluate import run

    run(cfg)


def predict(cfg: DictConfig) -> None:
    from mnist_cnn.predict import run

    run(cfg)


def export(cfg: DictConfig) -> None:
    from mnist_cnn.export import run

    run(cfg)
