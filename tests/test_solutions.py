"""`%%solution` (solutions.py): a solution cell run as it is shows nothing of its answer; asked, it runs."""
import pytest
from IPython.core.interactiveshell import InteractiveShell

import solutions

CELL = "%%solution\nanswer = 6 * 7\nprint('the answer is', answer)"


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "solutions")
    shell.user_ns.pop("answer", None)
    yield shell
    shell.user_ns.pop("answer", None)


def test_a_solution_run_as_it_is_shows_nothing_of_its_answer(shell, capsys, monkeypatch):
    monkeypatch.delenv(solutions.ASKED_BY_ENVIRONMENT, raising=False)  # as in a learner's JupyterLab
    result = shell.run_cell(CELL)
    out = capsys.readouterr().out
    assert result.success and "answer" not in shell.user_ns  # its code did not run
    assert "42" not in out and "%%solution run" in out  # it says how to run it, and nothing else


def test_a_solution_asked_for_runs_in_the_notebooks_namespace(shell, capsys, monkeypatch):
    monkeypatch.delenv(solutions.ASKED_BY_ENVIRONMENT, raising=False)
    shell.run_cell(CELL.replace("%%solution", "%%solution run", 1))
    assert capsys.readouterr().out == "the answer is 42\n" and shell.user_ns["answer"] == 42


def test_the_tests_run_every_solution(shell, capsys):
    # the repository's conftest.py sets COURSE_SOLUTIONS=run for pytest, and so for nbval's kernels
    shell.run_cell(CELL)
    assert capsys.readouterr().out == "the answer is 42\n"


def test_a_solution_runs_its_own_magics_and_fails_as_its_code_does(shell, capsys):
    shell.run_cell("%%solution\nnames = %who_ls\nprint('names' in dir())")
    assert capsys.readouterr().out == "True\n"
    result = shell.run_cell("%%solution\n1 / 0")
    assert isinstance(result.error_in_exec, ZeroDivisionError)  # the cell fails: nbval sees it, as a learner does


def test_a_misspelt_request_is_refused_rather_than_taken_for_no():
    with pytest.raises(ValueError, match="run"):
        solutions.asked("runn")
