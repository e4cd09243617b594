"""The instructor's one command for a shared server's accounts, against the course's local server."""
import MySQLdb

import config
from conftest import ROOT, run_python


def test_accounts_are_made_one_per_learner_each_on_its_own_schema_only(server_up):
    made = run_python("import sys; sys.path.insert(0, 'instructors'); import accounts; "
                      "accounts.main(['create', '2', '--prefix', 'testlearner', '--user-host', '127.0.0.1'])")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert len(lines) == 2
    settings = dict(part.split("=", 1) for part in lines[0].split())
    assert settings["DB_USER"] == "testlearner01" and settings["DB_SCHM"] == "testlearner01_schema"
    try:
        learner = MySQLdb.connect(host=settings["DB_HOST"], port=int(settings["DB_PORT"]), user=settings["DB_USER"],
                                  password=settings["DB_PASS"], database=settings["DB_SCHM"])
        learner.cursor().execute("CREATE TABLE t (a INT)")  # in its own schema: yes
        try:
            learner.cursor().execute(f"CREATE TABLE `{config.DB_SCHM}`.t (a INT)")  # in the course's: no
            raise AssertionError("a learner could write in another schema")
        except MySQLdb.Error as refused:
            assert refused.args[0] == 1142  # CREATE command denied
        learner.close()
    finally:
        dropped = run_python("import sys; sys.path.insert(0, 'instructors'); import accounts; "
                             "accounts.main(['drop', '2', '--prefix', 'testlearner', '--user-host', '127.0.0.1'])")
        assert dropped.returncode == 0, dropped.stderr
    assert (ROOT / "instructors" / "guide.md").exists()
