"""What pruning saves: the same Optuna search with a pruner (the median by default) and without, side by side.

    python scripts/benchmark_pruning.py                              # 20 trials of 3 epochs each
    python scripts/benchmark_pruning.py +trainer.limit_train_batches=0.05   # a shorter version
    python scripts/benchmark_pruning.py --pruner percentile                 # the stricter pruner against none
    python scripts/benchmark_pruning.py --pruner-setting n_startup_trials=3  # the pruner under test, changed

Both searches run `python train.py -m hparams_search=optuna` as a user types it, over
optimizer.lr (log 1e-4..3e-2), data.batch_size, model.channels and model.dropout, with the
same TPE seed, each in its own log folder; they run at the same time, one torch thread each,
so that load from other processes slows both alike. Trailing arguments are Hydra overrides
for both. Prints one markdown table: total optimizer steps, wall time (first trial's start to
last trial's end), trials by state, the best val/acc_best and that trial's test/acc, read back
from the studies and metrics.json.

With `--keep DIR`, a search already finished in DIR/<pruner> is read back, not run again (a
study runs only its missing trials): another pruner can be compared with the same unpruned
search, which is deterministic on a CPU, without paying for it twice.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def search_command(log_dir: Path, pruner: str, trials: int, epochs: int, seed: int, overrides: list[str]) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "train.py"), "-m", "hparams_search=optuna",
            f"hydra/sweeper/pruner={pruner}", f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.sampler.seed={seed}", "optimizer.lr=tag(log, interval(1e-4, 3e-2))",
            f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false", "threads=1",
            f"log_dir={log_dir}", *overrides]


def results(log_dir: Path) -> dict:
    study_dir = log_dir / "optuna" / "mnist-cnn"
    study = optuna.load_study(study_name="mnist-cnn", storage=f"sqlite:///{study_dir}/study.db")
    metrics = {trial.number: json.loads((study_dir / str(trial.number) / "metrics.json").read_text())
               for trial in study.trials if (study_dir / str(trial.number) / "metrics.json").exists()}
    best = study.best_trial
    states = [trial.state.name.lower() for trial in study.trials]
    wall_time = max(t.datetime_complete for t in study.trials) - min(t.datetime_start for t in study.trials)
    return {"steps": sum(m["steps"] for m in metrics.values()), "minutes": wall_time.total_seconds() / 60,
            "epochs": sum(m["epochs"] for m in metrics.values()),
            "states": ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))),
            "best_trial": best.number, "best_val": best.value, "best_test": metrics[best.number]["test/acc"],
            "best_params": best.params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruner", default="median", choices=["median", "percentile", "hyperband"])
    parser.add_argument("--pruner-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the pruner under test (not of the unpruned search), e.g. n_startup_trials=3")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="log folder to keep the searches in (default: a temporary one)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    pruners = (args.pruner, "none")
    root = args.keep or Path(tempfile.mkdtemp(prefix="pruning_benchmark_"))
    finished, searches = set(), {}
    for pruner in pruners:
        log_dir = root / pruner
        log_dir.mkdir(parents=True, exist_ok=True)
        settings = [f"hydra.sweeper.pruner.{setting}" for setting in args.pruner_setting] if pruner != "none" else []
        command = search_command(log_dir, pruner, args.trials, args.epochs, args.seed, [*args.overrides, *settings])
        print(" ".join(command[1:]), file=sys.stderr)
        searches[pruner] = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=(log_dir / "search.log").open("a"),
                                            stderr=subprocess.STDOUT)
    while len(finished) < len(searches):
        for pruner, process in searches.items():
            if pruner not in finished and process.poll() is not None:
                finished.add(pruner)
                if process.returncode:
                    raise SystemExit(f"the {pruner} search failed: see {root / pruner / 'search.log'}")
        time.sleep(1)

    print("| pruner | trials | epochs trained | optimizer steps | wall time (min) | best val/acc_best | its test/acc |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    table = {pruner: results(root / pruner) for pruner in pruners}
    for pruner, row in table.items():
        print(f"| {pruner} | {row['states']} | {row['epochs']} | {row['steps']} | {row['minutes']:.1f} "
              f"| {row['best_val']:.2%} | {row['best_test']:.2%} |")
    saved = 1 - table[args.pruner]["steps"] / table["none"]["steps"]
    gap = 100 * (table["none"]["best_val"] - table[args.pruner]["best_val"])
    print(f"\n{args.pruner} pruning: {saved:.0%} fewer optimizer steps; "
          f"best val/acc_best {gap:+.2f} pp below the unpruned search's.")
    for pruner, row in table.items():
        print(f"best {pruner}: trial {row['best_trial']} {row['best_params']}")
    print(f"searches kept in {root}", file=sys.stderr)


if __name__ == "__main__":
    main()
