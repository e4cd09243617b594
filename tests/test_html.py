"""`make html`: every notebook rendered with its outputs, one page each."""
import subprocess

from conftest import ROOT


def test_make_html_renders_one_page_per_notebook(tmp_path):
    subprocess.run(["make", "html", f"HTML_DIR={tmp_path}"], cwd=ROOT, check=True, capture_output=True)
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.stem for p in tmp_path.glob("*.html")) == notebooks
    page = (tmp_path / "01_naive.html").read_text()
    assert "Lost connection to server during query" in page  # with its outputs
