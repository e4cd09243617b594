"""HAProxy (Debian's 2.6) in front of local MariaDB servers, sending new connections only to the
servers whose health check passes: a check that asks each server a question over the MySQL
protocol (``SELECT @@read_only``, say) and passes only on the answer wanted.

HAProxy's own ``option mysql-check`` only logs in: a server that answers a login may still be the
wrong one (an old primary started again, writable; a replica). This check is HAProxy's generic
``tcp-check``: it waits for the server's greeting, logs in as a user with no password and no
privileges, sends the query and a ``QUIT`` at once (the server closes the session cleanly,
whatever the answer), waits for the end of the answer, and passes when its one row holds the
value wanted. Nothing runs per check (an ``external-check`` starts a program every time, which
HAProxy's manual advises against, and needs ``insecure-fork-wanted``), and no agent has to be
kept running beside the servers.
"""
import os
import signal
import socket
import struct
import subprocess
import time

import localdb

CHECK_USER = "haproxy"  # logs in with no password and no privileges: it only asks
CLIENT_CAPABILITIES = 0x0200 | 0x2000 | 0x8000  # protocol 4.1, transactions, 4.1 authentication
UTF8 = 0x21


def _packet(sequence, payload):
    """One MySQL protocol packet: a 3-byte length, a sequence number, the payload."""
    return struct.pack("<I", len(payload))[:3] + bytes([sequence]) + payload


def check_rules(query, answer, user=CHECK_USER):
    """The ``tcp-check`` lines of a check that passes when ``query``'s one value is ``answer``.

    The answer to a query is a column count (packet 1), the column (2), an EOF (3), the row (4)
    and an EOF (5): the check waits for that last EOF, then looks for the row wanted."""
    login = _packet(1, struct.pack("<II", CLIENT_CAPABILITIES, 1 << 24) + bytes([UTF8]) + bytes(23)
                    + user.encode() + b"\0" + b"\0")  # the user, and an empty password
    ask = _packet(0, b"\x03" + query.encode()) + _packet(0, b"\x01")  # COM_QUERY, then COM_QUIT
    row = _packet(4, bytes([len(answer)]) + answer.encode())
    return ["option tcp-check",
            "tcp-check connect",
            "tcp-check expect rbinary ^......000A comment greeting",  # rbinary matches upper-case hex
            f"tcp-check send-binary {login.hex()} comment login",
            "tcp-check expect rbinary ^......0200 comment logged-in",  # an OK packet, the second of the session
            f"tcp-check send-binary {ask.hex()} comment query",
            "tcp-check expect rbinary 05000005FE comment answer",  # the EOF after the row: all of it is here
            f"tcp-check expect min-recv 0 binary {row.hex()} comment wanted-answer"]


CONFIG = """\
global
    stats socket {admin} level admin
defaults
    mode tcp
    timeout connect 2s
    timeout check 2s
    timeout client 30m   # an idle connection is closed after this: one more idle limit (chapter 07)
    timeout server 30m
listen mysql
    bind 127.0.0.1:{port}
    # a server takes new connections while it answers {query} with {answer}
{rules}
    default-server inter 300ms fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


class Proxy:
    """HAProxy on 127.0.0.1:``port``, its files in ``home``, in front of ``servers`` ({name: port})."""

    def __init__(self, home, port, servers, query, answer):
        self.home, self.port, self.servers, self.query, self.answer = home, port, dict(servers), query, answer
        self.config_file, self.pid_file, self.log = home / "haproxy.cfg", home / "haproxy.pid", home / "haproxy.out"
        self.admin = home / "haproxy.sock"

    def config(self):
        rules = "\n".join(f"    {line}" for line in check_rules(self.query, self.answer))
        servers = "\n".join(f"    server {name} 127.0.0.1:{port} check" for name, port in self.servers.items())
        return CONFIG.format(admin=self.admin, port=self.port, query=self.query, answer=self.answer, rules=rules,
                             servers=servers)

    def pid(self):
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def start(self, up=()):
        """Start HAProxy with every server DOWN but those in ``up``: each then takes connections
        once its check passes. (HAProxy would start with every server UP until two checks fail.)"""
        self.stop()
        program = localdb._program("haproxy")
        if localdb._port_taken(self.port):
            raise localdb.ServerError(f"port {self.port} on 127.0.0.1, HAProxy's, is already taken by another program")
        self.config_file.write_text(self.config())
        with open(self.log, "ab") as out:
            process = subprocess.Popen([program, "-f", str(self.config_file), "-db"], stdout=out, stderr=out,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + 10
        while not (self._takes_commands() and localdb._port_taken(self.port)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise localdb.ServerError(f"haproxy did not start; see {self.log}")
            time.sleep(0.05)
        for name in self.servers:
            self.command(f"set server mysql/{name} health {'up' if name in up else 'down'}")

    def stop(self):
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.05)
                try:
                    os.waitpid(pid, os.WNOHANG)  # reap it, when this process started it
                except ChildProcessError:
                    pass
        self.pid_file.unlink(missing_ok=True)

    def _takes_commands(self):
        """The admin socket's file can be there a moment before HAProxy answers on it: ask, and see."""
        try:
            return bool(self._ask("show info"))
        except (FileNotFoundError, ConnectionRefusedError):
            return False

    def command(self, command):
        """One command on HAProxy's admin socket; its answer."""
        try:
            return self._ask(command)
        except OSError as error:
            alive = "running" if self.pid() is not None else "not running"
            raise localdb.ServerError(f"HAProxy ({alive}) did not take {command!r} on its admin socket: "
                                      f"{error.strerror}; see {self.log}") from None

    def _ask(self, command):
        with socket.socket(socket.AF_UNIX) as admin:
            admin.connect(str(self.admin))
            admin.sendall(command.encode() + b"\n")
            answer = b""
            while chunk := admin.recv(65536):
                answer += chunk
        return answer.decode()

    def state(self, name):
        """HAProxy's view of a server: UP, DOWN, MAINT, ..."""
        for line in self.command("show servers state mysql").splitlines():
            fields = line.split()
            if len(fields) > 6 and fields[3] == name:
                admin_state, operational = int(fields[6]), int(fields[5])
                if admin_state & 1:  # forced into maintenance
                    return "MAINT"
                return {0: "DOWN", 1: "STARTING", 2: "UP", 3: "STOPPING"}.get(operational, str(operational))
        return None

    def wait_for(self, name, states, seconds=10):
        """Until HAProxy sees server ``name`` in one of ``states`` (a tuple)."""
        deadline = time.monotonic() + seconds
        while self.state(name) not in states:
            if time.monotonic() > deadline:
                raise localdb.ServerError(f"HAProxy did not see {name} {' or '.join(states)} within {seconds} s; "
                                          f"it sees {self.state(name)}; see {self.log}")
            time.sleep(0.05)
