"""Workers on several machines share a PostgreSQL study: two ``cxrlab sweep`` processes,
each in its own folder as if on its own machine, one storage, six tiny runs; each run is
done exactly once. Runs against a real PostgreSQL server started for the test."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from cxrlab.study.trials import RUN_ID


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on a free loopback port; yields its SQLAlchemy URL."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql): initdb is missing")
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install 'cxrlab[postgres]')")
    # The server refuses to run as root: run it as the postgres user, in a folder it owns
    # (under /tmp, which that user can reach; pytest's own temp folders are root's alone).
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="cxrlab-pg-"))
    if as_user:
        shutil.chown(folder, user="postgres")
    data, port = folder / "data", _free_port()
    try:
        subprocess.run(
            as_user
            + [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            as_user
            + [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(folder / "server.log"),
                "-w",
                "-o",
                f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log = (folder / "server.log").read_text(errors="replace")[-2000:] if (folder / "server.log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL from {bin_dir}: {exc}\n{getattr(exc, 'stderr', b'')!r}\n{log}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_one_postgres_study_run_each_run_once(tmp_path, tiny_root, postgres_url):
    study = tmp_path / "shared.yaml"
    study.write_text(f"""
name: shared
data: {tiny_root}
repeats: 2
defaults: {{model: scratch_cnn, mode: scratch, image_size: 32, batch_size: 16, epochs: 1, augment: none}}
grids:
  - {{lr: [1.0e-3, 2.0e-3, 3.0e-3]}}
""")
    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]
    workers = []
    for folder in machines:
        folder.mkdir()
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "cxrlab", "sweep", str(study), "--storage", postgres_url],
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)

    expected = {f"scratch_cnn-scratch-lr={lr}-seed={seed}" for lr in ("1e-3", "2e-3", "3e-3") for seed in (0, 1)}
    done = [
        {
            p.name
            for p in (folder / "runs" / "shared" / "runs").glob("*")
            if json.loads((p / "status.json").read_text())["status"] == "finished"
        }
        for folder in machines
    ]
    assert done[0] | done[1] == expected, "every run finished on one machine or the other"
    assert not done[0] & done[1], "no run was done twice"
    # Each machine ran its own share and waited for the other before writing its table.
    for folder, runs in zip(machines, done):
        assert len(list((folder / "runs" / "shared" / "runs").iterdir())) == len(runs)

    trials = optuna.load_study(study_name="shared", storage=postgres_url).get_trials()
    complete = [t.user_attrs[RUN_ID] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete) == sorted(expected), "one completed trial per run"
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
