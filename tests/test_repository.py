"""The repository's own papers: a license for the prose and one for the code, a citation file,
a contributing guide whose commands exist."""
import json
import re
import subprocess
from pathlib import Path

import yaml

from conftest import ROOT

CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def cells_of(notebook, cell_type):
    """The cells of one kind in a chapter, each as (its source, the cell)."""
    cells = json.loads(notebook.read_text())["cells"]
    return [("".join(cell["source"]), cell) for cell in cells if cell["cell_type"] == cell_type]


def test_the_license_covers_prose_and_code():
    text = (ROOT / "LICENSE").read_text()
    assert "Creative Commons Attribution 4.0" in text and "MIT License" in text


def test_the_citation_file_is_valid_and_names_the_course():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    title = (ROOT / "README.md").read_text().splitlines()[0].lstrip("# ")
    assert citation["title"] == title
    assert set(citation["license"]) == {"CC-BY-4.0", "MIT"}


def test_the_contributing_guide_names_only_what_exists():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    for path in re.findall(r"`((?:notebooks|bench|docs|tests|\.ci)/[\w./]*|\w+\.py)`", text):
        assert (ROOT / path).exists() or (ROOT / "notebooks" / path).exists(), path
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
    assert all(target in targets for target in re.findall(r"`make ([\w-]+)`", text))


def test_no_committed_output_holds_a_path_of_the_machine_that_ran_it():
    for notebook in CHAPTERS:
        text = notebook.read_text()
        for path in ("site-packages", str(ROOT), "/root/", "/home/"):
            assert path not in text, f"{notebook.name} holds {path!r}"


def test_every_chapter_has_resources_with_the_libraries_own_docs():
    for notebook in CHAPTERS:
        resources = [source for source, _ in cells_of(notebook, "markdown") if source.startswith("## Resources")]
        assert resources and "https://" in resources[0], notebook.name


def test_the_notebooks_hold_no_execution_timestamps():
    # what the nbstripout pre-commit hook removes: outputs and counts stay, nbval checks them
    result = subprocess.run([str(ROOT / ".venv/bin/nbstripout"), "--verify", "--keep-output", "--keep-count", *CHAPTERS],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing_in_the_code_and_the_notebooks():
    result = subprocess.run([str(ROOT / ".venv/bin/ruff"), "check", "--output-format", "concise", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_dev_container_runs_the_courses_own_commands():
    container = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
    assert "bookworm" in container["image"]  # Debian 12, as the course is tested on
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
    for command in (container["postCreateCommand"], container["postStartCommand"]):
        assert command.split()[0] == "make" and command.split()[1] in targets
    assert "work" in container["postCreateCommand"].split()  # the learner's copies, made before they open
    opened = container["customizations"]["codespaces"]["openFiles"]
    assert opened and all(path.startswith("work/") for path in opened)  # the learner's copies, never notebooks/
    assert all((ROOT / "notebooks" / Path(path).name).exists() for path in opened)
    assert 8888 in container["forwardPorts"]


def test_every_solution_is_collapsed_until_the_reader_opens_it():
    for notebook in CHAPTERS:
        solutions = [cell for source, cell in cells_of(notebook, "code") if source.startswith("%%solution")]
        assert solutions, f"{notebook.name} has no solution cell"
        for cell in solutions:
            assert "hide-cell" in cell["metadata"].get("tags", [])  # the book hides its source and its output
            assert cell["metadata"].get("jupyter") == {"source_hidden": True, "outputs_hidden": True}, notebook.name


def test_every_solution_runs_only_when_asked_and_its_first_line_gives_nothing_away():
    # JupyterLab shows a collapsed cell's first line: it is the magic's (solutions.py), and nothing else
    for notebook in CHAPTERS:
        first_code = cells_of(notebook, "code")[0][0]
        assert "%xmode Minimal\n" in first_code and "%load_ext solutions\n" in first_code, notebook.name
        for source, cell in cells_of(notebook, "code"):
            if "Solution" in source.split("\n", 1)[0] or "hide-cell" in cell["metadata"].get("tags", []):
                assert source.split("\n", 1)[0] == "%%solution", notebook.name


def test_every_committed_solution_output_is_the_solutions_own():
    from solutions import NOT_RUN

    for notebook in CHAPTERS:
        assert NOT_RUN not in notebook.read_text(), f"{notebook.name}: executed without COURSE_SOLUTIONS=run"


def test_every_exercise_has_a_collapsed_hint_before_its_solution():
    for notebook in CHAPTERS:
        cells = json.loads(notebook.read_text())["cells"]
        since_the_last_solution = []
        for cell in cells:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and source.startswith("%%solution"):
                hints = [s for s in since_the_last_solution if s.startswith("<details><summary>Hint</summary>")]
                assert len(hints) == 1 and hints[0].rstrip().endswith("</details>"), notebook.name
                since_the_last_solution = []
            elif cell["cell_type"] == "markdown":
                since_the_last_solution.append(source)


def test_no_chapter_prints_a_docstring():
    # docstrings are written for the code's readers, in reST (``name``): the chapters say it in their own prose
    for notebook in CHAPTERS:
        for source, _ in cells_of(notebook, "code"):
            assert "getdoc(" not in source and ".__doc__" not in source and "help(" not in source, notebook.name


def test_every_chapter_with_sql_cells_starts_them_afresh():
    # run again in the same kernel, a chapter meets %sql's connection of its first run, which that
    # run's restart killed: config.forget_sql_connections() lets go of it first (tests/test_config.py)
    for notebook in CHAPTERS:
        first_sql = next((source for source, _ in cells_of(notebook, "code") if "%sql" in source), None)
        if first_sql is not None:
            assert first_sql.index("config.forget_sql_connections()") < first_sql.index("%sql"), notebook.name


def test_the_files_make_test_starts_first_exist():
    from conftest import LONGEST_FIRST

    files = {path.stem for path in CHAPTERS} | {path.stem for path in (ROOT / "tests").glob("test_*.py")}
    assert set(LONGEST_FIRST) <= files, set(LONGEST_FIRST) - files  # a renamed file would quietly start last


def test_no_file_holds_a_merge_conflicts_markers():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    marked = subprocess.run(["git", "grep", "-l", "-E", "^(<<<<<<<|>>>>>>>) ", "--", *tracked], cwd=ROOT,
                            capture_output=True, text=True).stdout.split()
    assert marked == [], marked
