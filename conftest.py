"""pytest, here at the repository's root so that it holds for `pytest notebooks/X.ipynb` too: the
notebooks' kernels (started by nbval, with this process's environment) run every `%%solution`
cell, so that each chapter's committed outputs, its solutions' among them, are checked
(solutions.py)."""
import os

os.environ["COURSE_SOLUTIONS"] = "run"
