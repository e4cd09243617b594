"""The root conftest.py's check after each file on a make test worker: a connection the file left
open on the worker's server fails that file, and is killed. Run as a pytest of its own, on this
worker's server, with a file that leaves one (the check can see what it checks)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

LEAVES_ONE = '''
import MySQLdb
import config

def test_leaves_a_connection_open():
    global KEPT
    KEPT = MySQLdb.connect(**config.connect_kwargs())
'''
WAITS_LESS = '''
import sys
import conftest

conftest.LEFT_CONNECTIONS_WAIT_S = 0.5  # the root conftest's, 0.5 s instead of 10

def pytest_sessionfinish(session):  # after the check: was the connection left open killed?
    try:
        sys.modules["test_leaves"].KEPT.ping()
        said = "still open"
    except Exception as error:
        said = f"killed: {error.args[0]}"
    with open("kept.txt", "w") as kept:
        kept.write(said)
'''


@pytest.mark.skipif("PYTEST_XDIST_WORKER" not in os.environ, reason="the check runs on a make test worker's server")
def test_a_file_that_leaves_a_connection_open_fails_and_the_connection_is_killed(tmp_path):
    (tmp_path / "test_leaves.py").write_text(LEAVES_ONE)
    (tmp_path / "waits_less.py").write_text(WAITS_LESS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "waits_less", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_leaves.py")],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    assert result.returncode == 1 and "1 passed, 1 error" in result.stdout, result.stdout[-2000:]
    assert re.search(r"test_leaves\.py left 1 connection\(s\) of \w+ on the server", result.stdout)
    assert (tmp_path / "kept.txt").read_text() in {"killed: 2013", "killed: 2006"}
