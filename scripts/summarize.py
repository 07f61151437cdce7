"""Summarise a sweep by hand: `python scripts/summarize.py logs/multiruns/<stamp>`.

Writes summary.csv, summary.md and summary.png (and, for a sweep over seed, summary_seeds.csv)
into the sweep folder, as the end of every multirun does, and prints the table; useful after
adding or re-running jobs.
"""

import argparse
from pathlib import Path

from mnist_cnn.sweep_summary import write_summary

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. logs/multiruns/<date>_<time>")
    sweep_dir = parser.parse_args().sweep_dir
    try:
        write_summary(sweep_dir)
    except FileNotFoundError as error:
        parser.error(str(error))
    print((sweep_dir / "summary.md").read_text(), end="")
