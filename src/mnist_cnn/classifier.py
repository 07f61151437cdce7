"""The LightningModule: cross-entropy training of the CNN, with metrics for every stage."""

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MaxMetric, MeanMetric, Metric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_cnn.model import IMAGE_SIZE
from mnist_cnn.schema import RUN_LENGTH_ARGUMENT, ConfigError

# The checkpoint's entry for the epoch's running training metrics.
EPOCH_METRICS = "epoch_metrics"


class Classifier(L.LightningModule):
    """Builds the net, optimizer and scheduler from plain config dicts (each with a
    `_target_`), so a checkpoint carries everything needed to rebuild the model and
    loads with torch.load(weights_only=True). It also carries what predict.py needs of the
    data: the class names by label and the dataset's `preprocessing` of an image file.
    (Checkpoints from before these were recorded hold digits: names 0-9, `digit`.)"""

    def __init__(self, model: dict[str, Any], optimizer: dict[str, Any],
                 scheduler: dict[str, Any] | None = None, class_names: list[str] | None = None,
                 preprocessing: str = "digit"):
        super().__init__()
        self.save_hyperparameters()
        self.net = instantiate(model)
        # Lightning's model summary runs this batch through the net to show shapes and FLOPs.
        self.example_input_array = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
        num_classes = model["num_classes"]
        self.class_names = list(class_names) if class_names else [str(label) for label in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"the data has {len(self.class_names)} classes but model.num_classes={num_classes}: "
                             "leave model.num_classes at its default, the number of data.class_names")
        # Losses averaged over images by torchmetrics, which sums values and weights across
        # ranks; Lightning's own mean of logged values truncates an odd total of images
        # across DDP ranks to an integer, and so misstates the loss of uneven shards.
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so a resumed run remembers its best
        self.test_images = SumMetric()  # proves each test image was seen once, across ranks
        self.restored_epoch_metrics: dict | None = None  # from the checkpoint a run resumes, until training starts

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        # A log call costs about a millisecond of Lightning bookkeeping, and the logger writes
        # step values only on some optimizer steps: log the step's loss (this rank's) on those,
        # as Lightning decides them (every log_every_n_steps optimizer steps, whatever
        # accumulate_grad_batches; never with log_every_n_steps=0). The epoch's figures only
        # accumulate here, without a sync.
        if self.trainer._logger_connector.should_update_logs:
            self.log("train/loss_step", loss, prog_bar=True)
        self.train_loss.update(loss.detach(), weight=len(labels))  # a short last batch counts for its images
        self.train_acc.update(logits, labels)
        return loss

    # A checkpoint carries the epoch's running training metrics, each rank's own: a run resumed in
    # the middle of that epoch then reports the whole epoch, not the batches after the resume. They
    # stay out of the weights' state_dict, which eval.py and predict.py load strictly.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        world_size = self.trainer.world_size
        checkpoint[EPOCH_METRICS] = {"epoch": self.current_epoch, "states": {
            name: {state: self.all_gather(value).reshape(world_size, *value.shape).cpu()
                   for state, value in metric.metric_state.items()}
            for name, metric in self._epoch_metrics().items()}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restored_epoch_metrics = checkpoint.get(EPOCH_METRICS)

    def on_train_start(self) -> None:
        restored, self.restored_epoch_metrics = self.restored_epoch_metrics, None
        # A checkpoint saved at an epoch's end resumes with the next epoch, which starts from zero.
        if restored is None or restored["epoch"] != self.current_epoch:
            return
        for name, states in restored["states"].items():
            metric = self._epoch_metrics()[name]
            for state, values in states.items():
                setattr(metric, state, values[self.global_rank].to(self.device))
            metric._update_count = 1  # it holds updates: computing it at the epoch's end is no mistake

    def _epoch_metrics(self) -> dict[str, Metric]:
        return {"train_loss": self.train_loss, "train_acc": self.train_acc}

    def on_train_epoch_end(self) -> None:
        # Logging a metric computes it across ranks, once per epoch, and resets it.
        self.log("train/loss_epoch", self.train_loss)
        self.log("train/acc_epoch", self.train_acc)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_acc(logits, labels)
        self.val_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        self.log("val/loss", self.val_loss)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # a few batches before training: not an epoch's result
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        self.test_acc(logits, labels)
        self.test_images.update(len(labels))
        self.test_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        self.log("test/loss", self.test_loss)
        self.log("test/acc", self.test_acc)
        return logits  # for callbacks' on_test_batch_end (ErrorAnalysis), so nothing predicts twice

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer, params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler_config = dict(self.hparams.scheduler)
        run_length = RUN_LENGTH_ARGUMENT.get(scheduler_config["_target_"])
        if run_length:
            steps = int(self.trainer.estimated_stepping_batches)
            scheduler_config[run_length] = steps
            pct_start = scheduler_config.get("pct_start", 0.3)
            if run_length == "total_steps" and float(pct_start * steps) == 1.0:  # OneCycleLR divides by warm-up - 1
                raise ConfigError(f"scheduler.pct_start={pct_start} of this run's {steps} steps is a warm-up of "
                                  "exactly one step, which one-cycle cannot divide: train longer, or change "
                                  "scheduler.pct_start")
        scheduler = instantiate(scheduler_config, optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class CheckpointError(RuntimeError):
    """A checkpoint file is missing or does not hold a Classifier."""


def load_classifier(ckpt_path: str | Path) -> Classifier:
    """The Classifier saved in `ckpt_path`, rebuilt from the model config the checkpoint carries."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: give the path of a .ckpt file, "
                              "e.g. ckpt_path=logs/runs/<run>/checkpoints/best.ckpt")
    try:
        return Classifier.load_from_checkpoint(path, map_location="cpu")
    except Exception as error:  # a file that is not a checkpoint fails in torch or Lightning, in many ways
        detail = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"cannot load checkpoint {path}: it is not a checkpoint written by train.py "
                              f"({type(error).__name__}: {detail})") from error
