"""Accounts for a room that shares one MariaDB or MySQL server: one user and one schema per
learner, each user with privileges on its own schema only, as the course's own user has.

    python instructors/accounts.py create 30                      # on the course's own server
    python instructors/accounts.py create 30 --host db.example.org --admin-user admin --admin-password ...
    python instructors/accounts.py drop 30 ...                    # the same options as create

``create`` prints one line per learner, the environment each learner sets before ``make lab``
(``DB_HOST``, ``DB_PORT``, ``DB_USER``, ``DB_PASS``, ``DB_SCHM``): hand each learner theirs. The
passwords are new random ones, printed once; an account that exists already gets a new one.
``--user-host`` is where learners connect from (``%``: anywhere). With no ``--host`` it works on
the course's own local server, as its root, through the server's socket (that root has no TCP
login: ``--host 127.0.0.1 --admin-user root`` is refused with 1045).

A ``create`` that fails half-way undoes what it made (the schemas and users it created), so that
no learner is left with half an account; the lines are printed only once every account is made.
"""
import argparse
import re
import secrets
import sys

import MySQLdb

import config
import localdb

# A prefix becomes part of a schema name written between backticks: letters, digits, underscores
PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,40}\Z")
DATABASE_EXISTS, USER_EXISTS = 1007, 1396  # CREATE DATABASE / CREATE USER on a name already there


class AccountsError(Exception):
    """What went wrong, and what to fix; printed without a traceback."""


def names(count, prefix):
    return [f"{prefix}{number:02d}" for number in range(1, count + 1)]


def admin_connection(args):
    if args.host is None:
        try:
            return localdb.course().root_connection()
        except MySQLdb.OperationalError as error:
            raise AccountsError(
                f"the course's local server (port {config.DB_PORT}) does not answer ({error.args[0]}: "
                f"{error.args[1]}): start it with `make server`, or give --host for another server") from None
    try:
        return MySQLdb.connect(host=args.host, port=args.port, user=args.admin_user,
                               password=args.admin_password or "")
    except MySQLdb.OperationalError as error:
        hint = "check --host, --port, --admin-user and --admin-password"
        if error.args[0] == 1045 and args.host in ("127.0.0.1", "localhost") and args.port == config.DB_PORT:
            hint = ("this is the course's own server, whose root logs in through its socket only: "
                    "leave out --host, --port and --admin-user")
        raise AccountsError(f"cannot log in as the admin ({error.args[0]}: {error.args[1]}); {hint}") from None


def create(cursor, args):
    """Make every learner's schema and user, or none: on an error, drop what this run created."""
    made, lines = [], []  # what this run created, in order: ("schema", name) or ("user", name)
    host = args.host or "127.0.0.1"
    port = args.port if args.host else config.DB_PORT
    try:
        for name in names(args.count, args.prefix):
            password, schema = secrets.token_urlsafe(12), f"{name}_schema"
            try:
                cursor.execute(f"CREATE DATABASE `{schema}`")
                made.append(("schema", schema))
            except MySQLdb.Error as error:
                if error.args[0] != DATABASE_EXISTS:
                    raise
            # The user and its host as parameters: the driver quotes them, and a % in them is data
            try:
                cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (name, args.user_host, password))
                made.append(("user", name))
            except MySQLdb.Error as error:
                if error.args[0] != USER_EXISTS:
                    raise
                cursor.execute("ALTER USER %s@%s IDENTIFIED BY %s", (name, args.user_host, password))
            cursor.execute(f"GRANT ALL PRIVILEGES ON `{schema}`.* TO %s@%s", (name, args.user_host))
            lines.append(f"DB_HOST={host} DB_PORT={port} DB_USER={name} DB_PASS={password} DB_SCHM={schema}")
    except MySQLdb.Error as error:
        undone = undo(cursor, made, args.user_host)
        raise AccountsError(
            f"creating the accounts failed at {name} ({error.args[0]}: {error.args[1]}); {undone}. The admin "
            "needs CREATE, CREATE USER and GRANT OPTION on the server: fix that and run the same command again"
        ) from None
    return lines


def undo(cursor, made, user_host):
    """Drop what ``create`` made, newest first; say what was undone, and what could not be."""
    left = []
    for kind, name in reversed(made):
        try:
            if kind == "user":
                cursor.execute("DROP USER %s@%s", (name, user_host))
            else:
                cursor.execute(f"DROP DATABASE `{name}`")
        except MySQLdb.Error as error:
            left.append(f"{kind} {name} ({error.args[0]}: {error.args[1]})")
    if left:
        return "these were made and could not be dropped, drop them by hand: " + ", ".join(left)
    return f"the {len(made)} schemas and users this run had made are dropped again" if made else "nothing was made"


def drop(cursor, args):
    for name in names(args.count, args.prefix):
        cursor.execute("DROP USER IF EXISTS %s@%s", (name, args.user_host))
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}_schema`")
    return [f"dropped {args.count} accounts and their schemas"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["create", "drop"])
    parser.add_argument("count", type=int, help="how many learners")
    parser.add_argument("--prefix", default="learner", help="user names: learner01, learner02, ...")
    parser.add_argument("--host", help="the shared server (default: the course's local one, through its socket)")
    parser.add_argument("--port", type=int, default=3306, help="the shared server's port (with --host)")
    parser.add_argument("--admin-user", default="root", help="an account allowed to create users (with --host)")
    parser.add_argument("--admin-password")
    parser.add_argument("--user-host", default="%", help="where learners connect from (default: anywhere)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 500:
        parser.error("count: from 1 to 500 learners")
    if not PREFIX.match(args.prefix):
        parser.error(f"--prefix {args.prefix!r}: a letter, then up to 40 letters, digits or underscores")
    try:
        connection = admin_connection(args)
        try:
            lines = (create if args.action == "create" else drop)(connection.cursor(), args)
        finally:
            connection.close()
    except AccountsError as error:
        sys.exit(f"error: {error}")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
