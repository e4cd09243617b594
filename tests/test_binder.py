"""Binder's start script, as Binder runs it: JupyterLab (here a stand-in command) comes up even when
the course's server cannot start, and the reason is kept for 00_setup's connection check to show."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import config
from conftest import ROOT

PORT = config.DB_PORT + 9  # a server of these tests' own, in a folder of their own (past the clusters' +1..+7)


@pytest.fixture
def course(tmp_path):
    """A copy of the repository as Binder has it (no .venv, no server, no work/), and the environment
    binder/start runs in there: this Python first on the PATH, a server folder and port of its own."""
    copy = tmp_path / "course"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", ".mysql", "work", "build"))
    env = {**os.environ, "COURSE_SERVER_DIR": str(tmp_path / "server"), "DB_PORT": str(PORT),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    return copy, env


def test_binder_start_hands_over_even_when_the_server_fails_and_keeps_the_reason(course):
    course, env = course
    home, port = Path(env["COURSE_SERVER_DIR"]), PORT
    with socket.create_server(("127.0.0.1", port)):  # another program holds the port: a real failed start
        started = subprocess.run(["bash", "binder/start", "python", "-c", "print('JupyterLab here')"], cwd=course,
                                 capture_output=True, text=True, env=env)
    assert started.returncode == 0 and started.stdout.strip().endswith("JupyterLab here"), started
    assert f"port {port} on 127.0.0.1 is already taken" in started.stderr  # what went wrong, said at once
    assert "JupyterLab starts anyway" in started.stderr
    assert f"port {port} on 127.0.0.1 is already taken" in (home / "start-failure.txt").read_text()
    checked = subprocess.run(["python", "-c", "import localdb; localdb.check_connection()"], cwd=course,
                             capture_output=True, text=True, env=env)  # 00_setup's first check
    assert checked.returncode == 1
    assert "no MySQL server answers" in checked.stderr and "Its last start failed" in checked.stderr
    assert f"port {port} on 127.0.0.1 is already taken" in checked.stderr


def test_a_start_that_succeeds_forgets_the_last_failure(tmp_path):
    home = tmp_path / "server"
    env = {**os.environ, "COURSE_SERVER_DIR": str(home), "DB_PORT": str(PORT)}
    home.mkdir()
    (home / "start-failure.txt").write_text("an old failure\n")
    try:
        started = subprocess.run([sys.executable, "-m", "localdb", "start"], cwd=ROOT, capture_output=True, text=True,
                                 env=env)
        assert started.returncode == 0, started.stderr
        assert not (home / "start-failure.txt").exists()
    finally:
        subprocess.run([sys.executable, "-m", "localdb", "stop"], cwd=ROOT, capture_output=True, env=env)


def test_binder_opens_the_learners_copies_and_keeps_them(course):
    """binder/start copies the chapters into work/, as `make lab` does, and never overwrites one."""
    course, env = course
    (course / "work").mkdir()
    (course / "work" / "00_setup.ipynb").write_text("changed by the learner")
    with socket.create_server(("127.0.0.1", PORT)):  # no server needed for this: let it fail at once
        subprocess.run(["bash", "binder/start", "true"], cwd=course, capture_output=True, env=env, check=True)
    assert (course / "work" / "00_setup.ipynb").read_text() == "changed by the learner"
    assert sorted(path.name for path in (course / "work").glob("*.ipynb")) == sorted(
        path.name for path in (ROOT / "notebooks").glob("*.ipynb"))
