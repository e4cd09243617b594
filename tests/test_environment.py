"""requirements.txt (the tested path) and chapter 09's requirements-frameworks.txt, and environment.yml
(for conda users), list the same packages."""
import re

import yaml

from conftest import ROOT


def pins(lines):
    return {line.split("#")[0].strip() for line in lines if re.match(r"\s*[A-Za-z]", line.split("#")[0])}


def test_environment_yml_lists_the_requirements():
    requirements = set()
    for name in ("requirements.txt", "requirements-frameworks.txt"):  # a chapter's own set too
        requirements |= pins((ROOT / name).read_text().splitlines())
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [item["pip"] for item in environment["dependencies"] if isinstance(item, dict)]
    assert pins(pip_lists[0]) == requirements
