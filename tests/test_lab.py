"""`make lab` serves JupyterLab on the reader's copies of the chapters (work/): started as the README
says, checked with a request."""
import subprocess
import time
import urllib.error
import urllib.request

from conftest import ROOT, running_lab


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
    with running_lab() as url:
        assert "JupyterLab" in get(url)
        assert "00_setup.ipynb" in get(url.replace("/lab/tree/work?", "/api/contents/work?"))


def test_make_lab_keeps_the_readers_copies_until_asked(tmp_path):
    copy = tmp_path / "work" / "00_setup.ipynb"
    copy.parent.mkdir()
    copy.write_text("changed by the reader")
    # make lab copies the chapters first, its prerequisite `work` (JupyterLab serving them: the test
    # above), so that is run alone here: a second JupyterLab would only cost its start
    planned = subprocess.run(["make", "-n", "lab", f"LAB_ROOT={tmp_path}"], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout
    assert planned.index("cp -n notebooks/*.ipynb") < planned.index("jupyter lab")
    subprocess.run(["make", "-s", "work", f"LAB_ROOT={tmp_path}"], cwd=ROOT, check=True, capture_output=True)
    assert copy.read_text() == "changed by the reader"  # make lab never overwrites a copy
    assert (tmp_path / "work" / "01_naive.ipynb").exists()  # and adds the ones missing
    subprocess.run(["make", "-s", "lab-refresh", f"LAB_ROOT={tmp_path}"], cwd=ROOT, check=True, capture_output=True)
    assert copy.read_bytes() == (ROOT / "notebooks" / "00_setup.ipynb").read_bytes()
