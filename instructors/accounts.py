"""Accounts for a room that shares one MariaDB or MySQL server: one user and one schema per
learner, each user with privileges on its own schema only, as the course's own user has.

    python instructors/accounts.py create 30 --admin-user root --admin-password ... --host db.example.org
    python instructors/accounts.py drop 30 --admin-user root ...

``create`` prints one line per learner, the environment each learner sets before ``make lab``
(``DB_HOST``, ``DB_PORT``, ``DB_USER``, ``DB_PASS``, ``DB_SCHM``): hand each learner theirs. The
passwords are new random ones, printed once. ``--user-host`` is where learners connect from
(``%``: anywhere). With no ``--host`` it works on the course's local server, through root's socket.
"""
import argparse
import secrets
import sys

import MySQLdb

import config
import localdb


def names(count, prefix):
    return [f"{prefix}{number:02d}" for number in range(1, count + 1)]


def admin_connection(args):
    if args.host is None:
        return localdb.course().root_connection()
    return MySQLdb.connect(host=args.host, port=args.port, user=args.admin_user, password=args.admin_password or "")


def create(cursor, args):
    lines = []
    for name in names(args.count, args.prefix):
        password, schema, user = secrets.token_urlsafe(12), f"{name}_schema", f"'{name}'@'{args.user_host}'"
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{schema}`")
        cursor.execute(f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY %s", (password,))
        cursor.execute(f"ALTER USER {user} IDENTIFIED BY %s", (password,))  # the instructor asked for new ones
        cursor.execute(f"GRANT ALL PRIVILEGES ON `{schema}`.* TO {user}")
        host = args.host or "127.0.0.1"
        port = args.port if args.host else config.DB_PORT
        lines.append(f"DB_HOST={host} DB_PORT={port} DB_USER={name} DB_PASS={password} DB_SCHM={schema}")
    return lines


def drop(cursor, args):
    for name in names(args.count, args.prefix):
        cursor.execute(f"DROP USER IF EXISTS '{name}'@'{args.user_host}'")
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}_schema`")
    return [f"dropped {args.count} accounts and their schemas"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["create", "drop"])
    parser.add_argument("count", type=int, help="how many learners")
    parser.add_argument("--prefix", default="learner", help="user names: learner01, learner02, ...")
    parser.add_argument("--host", help="the shared server (default: the course's local one)")
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--admin-user", default="root")
    parser.add_argument("--admin-password")
    parser.add_argument("--user-host", default="%", help="where learners connect from (default: anywhere)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 500:
        parser.error("count: from 1 to 500 learners")
    try:
        connection = admin_connection(args)
    except MySQLdb.OperationalError as error:
        sys.exit(f"error: cannot log in as the admin ({error.args[0]}: {error.args[1]}); check --host, --port, "
                 "--admin-user and --admin-password")
    try:
        for line in (create if args.action == "create" else drop)(connection.cursor(), args):
            print(line)
    finally:
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
