"""The instructor's one command for a shared server's accounts, run as the guide runs it, against
the course's local server."""
import os
import shutil
import subprocess
import sys

import MySQLdb
import pytest

import config
import localdb
from conftest import ROOT


def accounts(*arguments):
    """instructors/accounts.py run as the guide runs it, from the repository."""
    return subprocess.run([sys.executable, "instructors/accounts.py", *arguments], capture_output=True, text=True,
                          cwd=ROOT)


def schemas_and_users(prefix):
    root = localdb.course().root_connection()
    try:
        cursor = root.cursor()
        cursor.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s", (prefix + "%",))
        schemas = [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT user, host FROM mysql.user WHERE user LIKE %s", (prefix + "%",))
        return schemas, cursor.fetchall()
    finally:
        root.close()


def test_the_guides_command_with_its_defaults_makes_one_account_per_learner_on_its_own_schema(server_up):
    made = accounts("create", "2", "--prefix", "testlearner")  # the user host: % (anywhere), the default
    try:
        assert made.returncode == 0, made.stderr
        lines = made.stdout.splitlines()
        assert len(lines) == 2
        settings = dict(part.split("=", 1) for part in lines[0].split())
        assert settings["DB_USER"] == "testlearner01" and settings["DB_SCHM"] == "testlearner01_schema"
        assert (settings["DB_HOST"], settings["DB_PORT"]) == ("127.0.0.1", str(config.DB_PORT))
        assert schemas_and_users("testlearner")[1] == (("testlearner01", "%"), ("testlearner02", "%"))
        learner = MySQLdb.connect(host=settings["DB_HOST"], port=int(settings["DB_PORT"]), user=settings["DB_USER"],
                                  password=settings["DB_PASS"], database=settings["DB_SCHM"])
        try:
            learner.cursor().execute("CREATE TABLE t (a INT)")  # in its own schema: yes
            with pytest.raises(MySQLdb.Error) as refused:
                learner.cursor().execute(f"CREATE TABLE `{config.DB_SCHM}`.t (a INT)")  # in the course's: no
            assert refused.value.args[0] == 1142  # CREATE command denied
        finally:
            learner.close()
        again = accounts("create", "2", "--prefix", "testlearner")  # run twice: new passwords, no error
        assert again.returncode == 0, again.stderr
        assert again.stdout.split("DB_PASS=")[1].split()[0] != settings["DB_PASS"]
    finally:
        dropped = accounts("drop", "2", "--prefix", "testlearner")
        assert dropped.returncode == 0, dropped.stderr
    assert schemas_and_users("testlearner") == ([], ())


def test_a_create_that_fails_half_way_leaves_no_half_made_account(server_up):
    """An admin who may create schemas but not users: the first schema is made, its user refused
    (1227); the schema must be gone again, and the message must say what the admin lacks."""
    root = localdb.course().root_connection()
    cursor = root.cursor()
    cursor.execute("CREATE USER 'testadminhalf'@'127.0.0.1' IDENTIFIED BY 'half-admin'")
    try:
        cursor.execute("GRANT CREATE, DROP ON *.* TO 'testadminhalf'@'127.0.0.1'")
        failed = accounts("create", "2", "--prefix", "testhalf", "--host", "127.0.0.1", "--port", str(config.DB_PORT),
                          "--admin-user", "testadminhalf", "--admin-password", "half-admin")
        assert failed.returncode == 1
        assert failed.stdout == ""  # no learner was handed settings that do not work
        assert "1227" in failed.stderr and "CREATE USER" in failed.stderr and "dropped again" in failed.stderr
        assert "Traceback" not in failed.stderr
        assert schemas_and_users("testhalf") == ([], ())
    finally:
        cursor.execute("DROP USER 'testadminhalf'@'127.0.0.1'")
        for schema in schemas_and_users("testhalf")[0]:
            cursor.execute(f"DROP DATABASE `{schema}`")
        root.close()


def test_the_course_servers_root_over_tcp_is_told_to_leave_out_host(server_up):
    refused = accounts("create", "1", "--host", "127.0.0.1", "--port", str(config.DB_PORT))
    assert refused.returncode == 1 and "1045" in refused.stderr and "leave out --host" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_prefix_that_is_not_a_plain_name_is_refused_before_anything_is_made():
    refused = accounts("create", "1", "--prefix", "a`b")
    assert refused.returncode == 2 and "--prefix" in refused.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="hides /usr/sbin in a mount namespace")
def test_setup_with_db_host_set_asks_for_no_server_and_no_haproxy(tmp_path):
    """A learner on the room's server has no MariaDB server or HAProxy: /usr/sbin, where both live,
    is hidden for the run. Without DB_HOST the setup names both (so they are hidden indeed); with it,
    nothing is missing."""
    script = f'mount --bind "{tmp_path}" /usr/sbin && exec bash bin/setup --check'
    env = {key: value for key, value in os.environ.items() if key != "DB_HOST"}
    local = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT, env=env)
    assert local.returncode == 1 and "mariadb-server" in local.stdout and "haproxy" in local.stdout, local
    shared = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT,
                            env={**env, "DB_HOST": "db.example.org"})
    assert shared.returncode == 0, shared.stdout + shared.stderr
    assert "no system package is missing" in shared.stdout


def test_two_learners_on_one_server_each_pass_the_strict_check_of_00_at_the_same_time(server_up):
    """The guide's shared-server variant, on the course's own server: two accounts made by the guide's
    command, and 00_setup (settings, %sql, SHOW PROCESSLIST) checked by nbval for both at once."""
    made = accounts("create", "2")
    try:
        assert made.returncode == 0, made.stderr
        base = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "DB_"))}
        runs = [subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "notebooks/00_setup.ipynb"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env={**base, **dict(part.split("=", 1) for part in line.split())})
                for line in made.stdout.splitlines()]
        for run in runs:
            output = run.communicate(timeout=120)[0]
            assert run.returncode == 0, output[-3000:]
    finally:
        assert accounts("drop", "2").returncode == 0


def test_the_sanitizers_read_a_learner_on_a_remote_shared_server_as_the_course_user():
    """What this machine cannot show for real (a learner at another address, a server with a name):
    the committed processlist and settings lines, rewritten as such a learner would see them,
    sanitize to the same text."""
    import re

    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "notebooks" / "sanitize.cfg").read_text())

    def sanitize(text):
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    committed = ["[(35, 'simplerr', '127.0.0.1:57832', 'simplerr_schema', 'Sleep', 0, '', None, 0.0)]",
                 "<td>35</td>\n            <td>simplerr</td>\n            <td>127.0.0.1:57832</td>\n"
                 "            <td>simplerr_schema</td>",
                 " * mysql+mysqldb://simplerr:***@127.0.0.1:13306/simplerr_schema\n2 rows affected.\n",
                 "'connected: simplerr@127.0.0.1:13306/simplerr_schema (your own server)'"]
    learners = [text.replace("simplerr", "learner07").replace("127.0.0.1:57832", "10.1.2.3:40112")
                .replace("127.0.0.1:13306", "db.example.org:3306") for text in committed]
    committed[-1] = "\"connected: simplerr@127.0.0.1:13306/simplerr_schema (the course's local server)\""
    for mine, theirs in zip(committed, learners):
        assert "learner07" in theirs and sanitize(theirs) == sanitize(mine), theirs
    assert sanitize("learner1234 and learner07x") == "learner1234 and learner07x"  # only the command's names


def test_the_guides_schedules_add_up_and_agree_with_the_readmes_workshop_times():
    """Each session's table adds up to the minutes its heading gives, with setup slack in it; each
    chapter's teach + exercise in the guide is the README's workshop time; and the two say the same
    of how long make test takes."""
    import re

    guide, readme = (ROOT / "instructors" / "guide.md").read_text(), (ROOT / "README.md").read_text()
    sessions = re.findall(r"The (\w+) session, (\d+) minutes:\n\n\| \1 session \| minutes \|\n\|---\|---\|\n"
                          r"((?:\|.*\| \d+ \|\n)+)", guide)
    assert [name for name, _, _ in sessions] == ["first", "second", "third"]
    for name, total, rows in sessions:
        minutes = {row: int(value) for row, value in re.findall(r"^\| (.*) \| (\d+) \|$", rows, re.M)}
        assert sum(minutes.values()) == int(total), name
        assert any(row.startswith("setup slack") and value >= 10 for row, value in minutes.items()), name
    taught = {chapter: int(teach) + int(exercise)
              for chapter, teach, exercise in re.findall(r"^\| (\d\d\w?) \w[\w ]* \| (\d+) \| (\d+) \|", guide, re.M)}
    in_readme = {chapter: int(time) for chapter, time in re.findall(r"^\| `(\d\d\w?)_\w+` \|.*\| (\d+) min \|$",
                                                                   readme, re.M)}
    chapters = {path.name[:path.name.index('_')] for path in (ROOT / "notebooks").glob("*.ipynb")}
    assert taught == in_readme and set(taught) == chapters
    make_test = re.compile(r"`make test`[^.]*?(\d+ to \d+) s on 2 cores")
    assert make_test.findall(guide) == make_test.findall(readme)[:1] != []
