"""Workers on several machines share a PostgreSQL study, with the URL the README shows:
``postgresql://user:password@host:port/db``, a password-checked user that is not a
superuser, and two ``cxrlab sweep`` processes, each in its own folder as if on its own
machine. Every run is done exactly once; a worker with other settings is refused. Runs
against a real PostgreSQL server started for the test (Debian's postgresql binaries)."""

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

from cxrlab.core.errors import CxrlabError
from cxrlab.study import storage as storage_module
from cxrlab.study.storage import open_storage, storage_url
from cxrlab.study.trials import RUN_ID

USER, PASSWORD, DATABASE = "cx", "cx-secret", "cxdb"


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


def _start_cluster(bin_dir: Path, folder: Path, port: int, as_user: list[str]) -> None:
    """initdb (local socket trusted, TCP by password), start the server, and make a plain
    user with its own database, as an administrator would."""
    data = folder / "data"
    run = lambda args: subprocess.run(as_user + args, check=True, capture_output=True, timeout=120)  # noqa: E731
    run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
         "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8"])  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o", options, "start"])
    psql = [
        str(bin_dir / "psql"),
        "-h",
        str(folder),
        "-p",
        str(port),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
    ]
    run(psql + ["-c", f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}' NOSUPERUSER NOCREATEDB"])
    run(psql + ["-c", f"CREATE DATABASE {DATABASE} OWNER {USER}"])


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on a free loopback port; yields the plain URL of a
    password-checked user's database."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql): initdb is missing")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'cxrlab[postgres]')")
    # The server refuses to run as root: run it as the postgres user, in a folder it owns
    # (under /tmp, which that user can reach; pytest's own temp folders are root's alone).
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="cxrlab-pg-"))
    if as_user:
        shutil.chown(folder, user="postgres")
    port = _free_port()
    try:
        _start_cluster(bin_dir, folder, port, as_user)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log = (folder / "server.log").read_text(errors="replace")[-2000:] if (folder / "server.log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL from {bin_dir}: {exc}\n{getattr(exc, 'stderr', b'')!r}\n{log}")
    try:
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"
    finally:
        subprocess.run(
            as_user + [str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(folder, ignore_errors=True)


def _sweep(study: Path, folder: Path, url: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cxrlab", "sweep", str(study), "--storage", url, *extra],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


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
    for folder in machines:
        folder.mkdir()
    workers = [_sweep(study, folder, postgres_url) for folder in machines]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)
    assert PASSWORD not in "".join(outputs), "the password is never printed"

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

    url = storage_url(postgres_url)
    trials = optuna.load_study(study_name="shared", storage=url).get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs[RUN_ID] for t in complete) == sorted(expected), "one completed trial per run"
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    # The dashboard sees each run's setting: lr varies, so it is a parameter of every trial.
    assert all(set(t.params) == {"lr"} for t in complete)
    assert {round(t.params["lr"], 6) for t in complete} == {1e-3, 2e-3, 3e-3}

    # A third machine with other settings is refused by the plan the first two recorded.
    third = tmp_path / "machine-c"
    third.mkdir()
    refused = _sweep(study, third, postgres_url, "--set", "epochs=2")
    output = refused.communicate(timeout=120)[0]
    assert refused.returncode == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert (
        len(lines) == 1 and "was planned with other settings" in lines[0] and "epochs (here 2; recorded 1)" in lines[0]
    )
    assert not (third / "runs" / "shared" / "runs").exists()


@pytest.mark.parametrize("form", ["postgresql", "postgresql+psycopg", "postgresql+psycopg2"])
def test_each_url_form_opens_the_storage(postgres_url, form):
    driver = form.partition("+")[2]
    if driver:
        pytest.importorskip(driver, reason=f"{driver} is not installed")
    url = postgres_url.replace("postgresql://", f"{form}://", 1)
    storage = open_storage(url)
    study = optuna.create_study(study_name=f"forms-{form}", storage=storage, load_if_exists=True)
    assert study.study_name == f"forms-{form}"


def test_plain_urls_get_an_installed_driver_and_a_missing_one_names_its_package(monkeypatch):
    monkeypatch.setattr(storage_module, "_importable", lambda module: module == "psycopg2")
    assert storage_url("postgresql://u:p@h:5432/d") == "postgresql+psycopg2://u:p@h:5432/d"
    assert storage_url("postgres://u:p@h/d") == "postgresql+psycopg2://u:p@h/d"
    with pytest.raises(
        CxrlabError, match=r"the psycopg driver is not installed: pip install 'psycopg\[binary\]'"
    ) as error:
        storage_url("postgresql+psycopg://u:secret@h/d")
    assert "secret" not in str(error.value)
    monkeypatch.setattr(storage_module, "_importable", lambda module: False)
    with pytest.raises(CxrlabError, match=r"no PostgreSQL driver is installed: pip install 'psycopg\[binary\]'"):
        storage_url("postgresql://u:p@h/d")
    assert storage_url("sqlite:///x/study.db") == "sqlite:///x/study.db"
    with pytest.raises(CxrlabError, match="not a database URL"):
        storage_url("not a url")
