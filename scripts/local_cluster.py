"""A one-machine SLURM cluster and PostgreSQL server, to try the cluster configs before a real
cluster and for the test suite's `cluster` tier. Needs root (Debian packages, daemons).

    python scripts/local_cluster.py up       # install what is missing, start, wait until ready
    python scripts/local_cluster.py status   # what runs, and the Optuna storage URL
    python scripts/local_cluster.py down     # stop what `up` started, nothing else

Everything it starts keeps its pid, logs and state in STATE_DIR; `down` stops those pids only.
It writes /etc/slurm/slurm.conf (where sbatch and sinfo look) and refuses to replace one it did
not write. One node (this machine, all its cores), one partition `debug`, no accounting."""

import argparse
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE_DIR = Path(os.environ.get("MNIST_CNN_CLUSTER_DIR", "/var/lib/mnist-cnn-cluster"))
SLURM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
PACKAGES = {"slurmctld": "slurm-wlm", "munged": "munge", "pg_ctlcluster": "postgresql"}
PARTITION = "debug"
PG_PORT = 55432  # beside, not on, a PostgreSQL the machine may already run on 5432
DATABASE = "optuna"
STORAGE_URL = f"postgresql+psycopg://postgres@127.0.0.1:{PG_PORT}/{DATABASE}"
WRITTEN_BY = "# Written by mnist-cnn scripts/local_cluster.py; `down` leaves it, `up` rewrites it."
READY_TIMEOUT_S = 60


def slurm_conf(state: Path) -> str:
    node = socket.gethostname().split(".")[0]
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return f"""{WRITTEN_BY}
ClusterName=local
SlurmctldHost={node}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation={state}/slurmctld
SlurmdSpoolDir={state}/slurmd
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
NodeName={node} CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def run(*command: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    if user:
        command = ("runuser", "-u", user, "--", *command)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        fail(f"{' '.join(command)} exited {result.returncode}: {(result.stderr or result.stdout).strip()[-500:]}")
    return result


def fail(message: str) -> None:
    sys.exit(f"local_cluster: error: {message}")


def install_missing_packages() -> None:
    missing = sorted({package for program, package in PACKAGES.items()
                      if not shutil.which(program, path="/usr/sbin:/usr/bin")})
    if not missing:
        return
    print(f"installing {' '.join(missing)} (apt-get)")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *missing]
    installed = subprocess.run(install, env=environment, capture_output=True, text=True, check=False)
    if installed.returncode != 0:  # the package lists of a fresh machine may be empty
        subprocess.run(["apt-get", "update", "-q"], env=environment, capture_output=True, check=False)
        installed = subprocess.run(install, env=environment, capture_output=True, text=True, check=False)
    if installed.returncode != 0:
        fail(f"apt-get install {' '.join(missing)} failed: {installed.stderr.strip().splitlines()[-1:]}")


def pid_in(pid_file: Path) -> int | None:
    """The pid `pid_file` names, when that process is alive."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, IndexError, ValueError, ProcessLookupError):
        return None


def postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        fail("PostgreSQL's server programs are not in /usr/lib/postgresql: apt-get install postgresql")
    return versions[-1].parent


def write_slurm_conf(state: Path) -> None:
    if SLURM_CONF.exists() and WRITTEN_BY not in SLURM_CONF.read_text():
        fail(f"{SLURM_CONF} was not written by this script (a real cluster's?): move it away to use the local one")
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(slurm_conf(state))


def start_munge(state: Path) -> None:
    if not MUNGE_KEY.exists():  # Debian's package writes one; a key of our own otherwise
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(128))
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    if pid_in(state / "munged.pid"):
        return
    socket_dir = Path("/run/munge")
    socket_dir.mkdir(exist_ok=True)
    shutil.chown(socket_dir, "munge", "munge")
    (state / "munge").mkdir(exist_ok=True)
    shutil.chown(state / "munge", "munge", "munge")
    # munged refuses to run as root; its pid file is in a folder it may write.
    run("munged", f"--pid-file={state}/munge/munged.pid", f"--log-file={state}/munge/munged.log",
        f"--seed-file={state}/munge/munged.seed", user="munge")
    (state / "munged.pid").write_text((state / "munge" / "munged.pid").read_text())


def start_slurm(state: Path) -> None:
    for folder in ("slurmctld", "slurmd"):
        (state / folder).mkdir(exist_ok=True)
    if not pid_in(state / "slurmctld.pid"):
        run("slurmctld")
    if not pid_in(state / "slurmd.pid"):
        run("slurmd")


def start_postgres(state: Path) -> None:
    data, binaries = state / "postgres", postgres_bin()
    if not (data / "PG_VERSION").exists():
        data.mkdir(exist_ok=True)
        shutil.chown(data, "postgres", "postgres")
        # Loopback only, without passwords: a server for trying things on this machine.
        run(str(binaries / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", user="postgres")
    if not pid_in(data / "postmaster.pid"):
        run(str(binaries / "pg_ctl"), "start", "-D", str(data), "-l", str(data / "server.log"), "-w",
            "-o", f"-p {PG_PORT} -c listen_addresses=127.0.0.1 -k {data}", user="postgres")
    psql = ["psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-tAc"]
    exists = run(*psql, f"SELECT 1 FROM pg_database WHERE datname='{DATABASE}'").stdout.strip()
    if not exists:
        run(*psql, f"CREATE DATABASE {DATABASE}")


def wait_until_ready() -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        node = run("sinfo", "--noheader", "-p", PARTITION, "-o", "%T", check=False).stdout.strip()
        database = run("pg_isready", "-h", "127.0.0.1", "-p", str(PG_PORT), check=False).returncode == 0
        if node in ("idle", "mixed", "allocated") and database:  # up, and maybe running jobs already
            return
        if node in ("down", "drained", "down*", "drain"):  # left down by an earlier start: resume it
            run("scontrol", "update", f"nodename={socket.gethostname().split('.')[0]}", "state=resume", check=False)
        time.sleep(0.5)
    fail(f"the cluster was not ready within {READY_TIMEOUT_S} s (node: {node or 'unknown'}, "
         f"database: {'up' if database else 'down'}); see the logs in {STATE_DIR}")


def up() -> None:
    if os.geteuid() != 0:
        fail(f"run as root (now {getpass.getuser()}): it installs packages and starts daemons")
    install_missing_packages()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    write_slurm_conf(STATE_DIR)
    start_munge(STATE_DIR)
    start_slurm(STATE_DIR)
    start_postgres(STATE_DIR)
    wait_until_ready()
    status()


def down() -> None:
    data = STATE_DIR / "postgres"
    if pid_in(data / "postmaster.pid"):
        run(str(postgres_bin() / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", user="postgres")
    for name in ("slurmd", "slurmctld", "munged"):
        pid = pid_in(STATE_DIR / f"{name}.pid")
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while pid_in(STATE_DIR / f"{name}.pid") == pid and time.monotonic() < deadline:
                time.sleep(0.2)
    print("stopped")


def status() -> None:
    states = {name: pid_in(STATE_DIR / f"{name}.pid") for name in ("munged", "slurmctld", "slurmd")}
    states["postgres"] = pid_in(STATE_DIR / "postgres" / "postmaster.pid")
    for name, pid in states.items():
        print(f"{name:10} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if all(states.values()):
        print(f"partition  {PARTITION} ({os.cpu_count()} CPUs)")
        print(f"storage    {STORAGE_URL}")
    else:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("up", "down", "status"))
    {"up": up, "down": down, "status": status}[parser.parse_args().action]()


if __name__ == "__main__":
    main()
