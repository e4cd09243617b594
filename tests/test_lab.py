"""`make lab` serves JupyterLab on notebooks/: started as the README says, checked with a request."""
import time
import urllib.error
import urllib.request

from conftest import running_lab


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
        assert "00_setup.ipynb" in get(url.replace("/lab/tree/notebooks?", "/api/contents/notebooks?"))
