"""`make lab` serves JupyterLab on notebooks/: started as the README says, checked with a request."""
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

from conftest import ROOT, free_port


def get(url, seconds=30):
    """The body of a 200 answer from ``url``, retried while the server is still binding its port."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
                return response.read().decode()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_make_lab_serves_the_course():
    port = free_port()
    lab = subprocess.Popen(["make", "lab", f"LAB_PORT={port}"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True,
                           env={**os.environ, "BROWSER": "true"})  # no browser to open in a test
    try:
        url = None
        deadline = time.monotonic() + 90
        while url is None and time.monotonic() < deadline:
            line = lab.stdout.readline()
            assert line, "make lab exited before JupyterLab printed its URL"
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab/tree/notebooks\?token=\w+", line)
            url = found and found.group(0)
        assert url, "JupyterLab did not print its URL within 90 s"
        assert "JupyterLab" in get(url)
        assert "00_setup.ipynb" in get(url.replace("/lab/tree/notebooks?", "/api/contents/notebooks?"))
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)
