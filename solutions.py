"""The chapters' solution cells: `%%solution` runs a cell's code only when the learner asks for it.

A chapter loads it with `%load_ext solutions`. A cell that starts with `%%solution` and is run as it
is (Shift+Enter through an exercise) prints how to run it, and nothing of the answer; its first line,
all that a collapsed cell shows, gives nothing away either. `%%solution run` runs it. The tests run
every solution (`COURSE_SOLUTIONS=run`, which the repository's conftest.py sets for pytest), so a
chapter's committed outputs are its solutions' own, checked like every other cell's.
"""
import os

ASKED_BY_ENVIRONMENT = "COURSE_SOLUTIONS"
NOT_RUN = ("The solution is not run, so that you can try the exercise first. To read it, open this cell "
           "(in JupyterLab, click its ••• above); to run it, change its first line to %%solution run")


def asked(line):
    """Whether the learner (`%%solution run`) or the tests (`COURSE_SOLUTIONS=run`) asked for the solution."""
    word = line.strip()
    if word not in ("", "run"):
        raise ValueError(f"%%solution takes one word, run, or none, not {word!r}")
    return word == "run" or os.environ.get(ASKED_BY_ENVIRONMENT) == "run"


def solution(line, cell):
    """The `%%solution` cell magic: run the cell's code in the notebook's namespace when asked, else say how."""
    if not asked(line):
        print(NOT_RUN)
        return
    from IPython import get_ipython

    shell = get_ipython()
    # transform_cell turns the cell's own magics (%sql ...) into Python, as running the cell would
    exec(compile(shell.transform_cell(cell), "<solution>", "exec"), shell.user_ns)


def load_ipython_extension(shell):
    shell.register_magic_function(solution, "cell")
