"""The real faults the course breaks connections with: a ``KILL``, an expired ``wait_timeout``, a
restart of the local server, and a TCP relay that cuts the link around one statement, drops it
silently, forgets idle connections as a NAT does, or puts the server a few milliseconds away.

None of them is a mock: each does to the server, or to the bytes between client and server,
what an admin, the server itself or a network does in production.
"""
import enum
import os
import queue
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import MySQLdb

import config
import localdb


def _admin(port=None):
    """A connection of the course's user of its own, as an admin's prompt is (to the server at
    ``port``, when it is not the course's: a node of the replica pair, say)."""
    return MySQLdb.connect(**dict(config.connect_kwargs(), **({"port": port} if port else {})))


def kill(connection_id, port=None):
    """``KILL`` a connection from a connection of its own, as an admin at the ``mysql>`` prompt would
    (on the server at ``port``, when it is not the course's)."""
    admin = _admin(port)
    try:
        admin.cursor().execute(f"KILL {int(connection_id)}")
    finally:
        admin.close()


def connections_of_the_course_user():
    """The ids of every connection of the course's user but the asker's, in any process: an app's,
    a worker's, a notebook's. (A user without the PROCESS privilege sees only its own.)"""
    admin = _admin()
    try:
        cursor = admin.cursor()
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND ID <> CONNECTION_ID()",
                       (config.DB_USER,))
        return sorted(row[0] for row in cursor.fetchall())
    finally:
        admin.close()


def kill_all(connection_ids, port=None):
    """``KILL`` each connection; one that has gone meanwhile is no error."""
    for connection_id in connection_ids:
        try:
            kill(connection_id, port)
        except MySQLdb.OperationalError as error:
            # 1094: no such id, it closed on its own; 1095: the id is another user's there (after a
            # restart or a failover ids start again, so ours has gone and its number is someone else's)
            if error.args[0] not in (1094, 1095):
                raise


@contextmanager
def kill_during(connection_id, after=0.3, port=None):
    """Kill the connection ``after`` seconds into the block: run a slow query inside it."""
    timer = threading.Timer(after, kill_all, [[connection_id], port])
    timer.start()
    try:
        yield
    finally:
        timer.join()


def expire_after(db, seconds=1):
    """Make the server drop ``db``'s connection once it has been idle ``seconds``: idle past it next.

    The real ``wait_timeout`` (8 hours by default), shortened for this one session. It is sent on
    the driver's connection directly: it is the fault, not a setting of the app's.
    """
    db.connection().cursor().execute(f"SET SESSION wait_timeout = {int(seconds)}")


def wait_until_closed(connection_ids, port=None, timeout=10, over=None):
    """Return as soon as the server holds none of ``connection_ids`` (their ``wait_timeout`` ran
    out, or a ``KILL`` ended them and their threads have wound up): a fixed sleep would wait
    longer, and a busy machine could still overrun it.

    It asks over a connection of its own, or over ``over`` (a driver's connection, left open):
    a connection just closed is listed a moment longer, as its own would be in a
    ``SHOW PROCESSLIST`` right after.
    """
    ids = [int(connection_id) for connection_id in connection_ids]
    if not ids:
        return
    admin = over or _admin(port)
    try:
        cursor = admin.cursor()
        deadline = time.monotonic() + timeout
        while True:
            cursor.execute(f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({', '.join(map(str, ids))})")
            still_open = sorted(row[0] for row in cursor.fetchall())
            if not still_open:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server still holds connections {still_open} after {timeout} s")
            time.sleep(0.02)
    finally:
        if over is None:
            admin.close()


def restart_server():
    """Restart the local server, cutting every connection. A server of your own (a shared one) is
    never restarted: every connection of the course's user is cut instead, which is what a
    restart does to them (the first query on each meets 2013, the next 2006)."""
    if not config.LOCAL_SERVER:
        ids = connections_of_the_course_user()
        kill_all(ids)
        wait_until_closed(ids)  # as after a restart: gone by the time this returns
        return SHARED_RESTART
    localdb.restart()
    return "server restarted"


#: What ``restart_server()`` says on a server of your own; sanitize.cfg reads it as "server restarted"
SHARED_RESTART = "your connections cut, as a restart cuts them (a server of your own is never restarted)"


@contextmanager
def server_down(seconds, behind=None):
    """Stop the local server as the block starts and start it again ``seconds`` later, in the
    background; the block ends when the server is back. Yields what happened, in words.

    A server of your own (a shared one) is never stopped: with ``behind``, the ``LinkCutter`` the
    client connects through, that relay plays a stopped server instead, for the same ``seconds``
    (it hangs up its connections, and every new one at once, as it does in front of a stopped
    server); without one, the block runs with the server up, and what it yields says "skipped"."""
    if not config.LOCAL_SERVER:
        if behind is None:
            yield "skipped: DB_HOST points at your own server, and the course does not stop it"
            return
        behind.play_a_stopped_server(seconds)
        try:
            yield SHARED_DOWN.format(seconds=seconds)
        finally:
            behind.wait_until_reachable()
        return
    localdb.stop()
    restart = threading.Timer(seconds, localdb.start)
    restart.start()
    try:
        yield f"server stopped; it starts again in {seconds} s"
    finally:
        restart.join()


#: What ``server_down(behind=...)`` says on a server of your own; sanitize.cfg reads it as the local line
SHARED_DOWN = "the link to your server is down for {seconds} s (a server of your own is never stopped)"


COM_QUERY = 3  # the MySQL protocol's command byte for a text statement


class _Verdict(enum.Enum):
    """What becomes of a chunk the relay received."""
    PASS = "passed on"
    SWALLOW = "swallowed without a word, and the link stays open"
    CUT = "swallowed, and the link is cut"


class _Relay:
    """A TCP relay: each connection accepted on ``port`` gets one of its own to ``target``, and the bytes go
    both ways, each chunk at once (``delay`` seconds later, when not 0), until one side hangs up. What
    becomes of each chunk is ``_judge()``'s, a subclass's: here every one is passed on."""

    def __init__(self, target, delay, address):
        self.target = target
        self.delay = delay  # seconds, each way
        self.listener = socket.create_server((address, 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links = {}  # the client's port, as the relay sees it -> its _Link
        self._closed = False
        self._unreachable_until = 0.0  # monotonic time; before it, the relay plays a stopped server
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def play_a_stopped_server(self, seconds):
        """For ``seconds``, do what this relay does in front of a stopped server: hang up every
        connection now, and every new one as soon as it is accepted (2013 at the handshake)."""
        with self._lock:
            self._unreachable_until = time.monotonic() + seconds
            links, self._links = list(self._links.values()), {}
        for link in links:
            link.hang_up()

    def wait_until_reachable(self):
        time.sleep(max(0.0, self._unreachable_until - time.monotonic()))

    def wait_until_passed_on(self, timeout=10):
        """Return once the server's hang-up after a ``KILL`` or an expired ``wait_timeout`` has
        reached the client, as it does at once without a relay (on a busy machine the relay's threads
        can be kept from it for a tenth of a second and more): no link has anything of the server's
        still waiting to be read. It is for a moment with no request in flight: a client that has
        stopped reading an answer keeps its bytes waiting, and ends this in ``TimeoutError``; and the
        relay's own cuts (``cut_next_reply``, ``cut_next_statement``) are not waited for."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                links = list(self._links.values())
            if not any(map(_still_in_the_relay, links)):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the relay has held what a server sent for {timeout} s")
            time.sleep(0.005)

    def close(self):
        """Stop relaying and hang up every connection, silenced ones included (their server sees it now).

        The thread that accepts ends first. Left blocked in ``accept()``, it outlived the relay, and under
        load it took connections meant for a later relay in the same process and hung them up at the
        handshake (2013): the asyncio chaos run met one in about a third of its runs."""
        with self._lock:  # a connection may be accepted meanwhile: it sees _closed, and hangs up itself
            self._closed = True
            links = list(self._links.values())
        _wake(self.listener)
        self._acceptor.join(timeout=10)
        self.listener.close()
        for link in links:
            link.hang_up()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _admit(self, link):
        """Called holding the lock as ``link`` is accepted, before any of its bytes go through."""

    def _judge(self, link, data, to_server):
        """What becomes of ``data``, a chunk on its way to the server (``to_server``) or back."""
        return _Verdict.PASS

    def _forget_closed_links(self):
        self._links = {port: link for port, link in self._links.items() if link.server.fileno() != -1}

    def _link_of(self, connection):
        self._forget_closed_links()
        link = self._links.get(_local_port(connection))
        if link is None:
            raise ValueError("that connection does not go through this relay (connect with its port)")
        return link

    def _accept(self):
        while True:
            try:
                client, (_, client_port) = self.listener.accept()
            except OSError:
                return  # closed
            if self._closed:  # close()'s own connection, to wake this thread up
                _hang_up(client)
                return
            if time.monotonic() < self._unreachable_until:
                _hang_up(client)  # as in front of a stopped server
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()  # nothing to relay to: the client sees the server as down
                continue
            for end in (client, server):  # each chunk goes on at once, as the client and the server send theirs
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                closed = self._closed
                if not closed:
                    now = time.monotonic()
                    link = self._links[client_port] = _Link(client, server, opened=now, last_used=now)
                    self._admit(link)
            if closed:  # accepted just as the relay closed: hung up like the others
                for end in (client, server):
                    _hang_up(end)
                return
            threading.Thread(target=self._pump, args=(link, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, False), daemon=True).start()

    def _pump(self, link, to_server):
        """Relay one way, the client's bytes to the server (``to_server``) or the server's back, until the end."""
        source, sink = (link.client, link.server) if to_server else (link.server, link.client)
        later = _Delayed(sink, self.delay) if self.delay else None
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            verdict = self._judge(link, data, to_server) if data else _Verdict.PASS
            if verdict is _Verdict.SWALLOW:
                continue
            if verdict is _Verdict.CUT:
                data = b""
            if not data:
                if link.silenced:  # one side hung up; the other is never told
                    _hang_up(source)
                    if later:
                        later.hang_up_after()  # nothing: its thread ends
                    return
                if later:  # after what is still on its way, as a FIN follows the data
                    later.hang_up_after(source, sink)
                else:
                    for end in (source, sink):
                        _hang_up(end)
                with self._lock:  # ended: no lifetime rule counts it
                    link.opened = link.last_used = None
                return
            if later:
                later.send(data)
                continue
            try:
                sink.sendall(data)
            except OSError:
                return


class LinkCutter(_Relay):
    """A TCP relay between the client and the server that breaks the link the ways networks do.

    - ``cut_next_reply()``: the server receives the statement and does the work (a write is
      committed), then its answer is dropped and both sides are hung up. The client sees 2013.
    - ``cut_next_statement()``: the statement is dropped before it reaches the server, and both
      sides are hung up. The server never ran it; the client sees 2013 all the same.
    - ``drop_silently()``: from now on nothing goes through, either way, and nothing is closed:
      what a NAT, a firewall or a load balancer does when it forgets a connection. The client
      waits for an answer until its ``read_timeout``; the server keeps the connection (and its
      transaction and locks) until its own ``wait_timeout``. With ``new_connections=True`` new
      connections get no greeting either: a network that has gone, bounded by ``connect_timeout``.
    - ``forget_idle_after``: a connection idle longer than that many seconds is dropped silently
      when it is next used, as a NAT table forgets idle entries (often after 4 to 6 minutes).
    - ``rtt_ms``: every packet waits half of it each way: the server is that many ms away.

    The cuts strike the next statement of ``connection`` (the client's, ``db.connection()``), or
    of any connection open at that moment; ``statement``, a prefix such as ``"COMMIT"``, strikes
    only the next statement that starts with it, and then on any connection, also ones opened
    later (a handshake is never a statement). ``times`` strikes that many. Connect with
    ``strategies.database(port=relay.port)``.
    """

    def __init__(self, host=None, port=None, rtt_ms=0, forget_idle_after=None, close_after=None,
                 close_idle_after=None, address="127.0.0.1"):
        """``close_after`` and ``close_idle_after``: a proxy's own lifetime rules (chapter 11). A
        connection that many seconds old, or idle (no packet either way) that long, is hung up on
        both sides, in the middle of a statement too: AWS RDS Proxy closes a client connection idle
        for 30 minutes by default, and every one after 24 hours. ``closed`` counts them by rule.
        ``address``: where the relay listens (127.0.0.1; on Linux any of 127.0.0.0/8)."""
        self._lifetimes = _Lifetimes(forget_idle_after, close_after, close_idle_after)
        self.closed = {"age": 0, "idle": 0}  # connections hung up by each lifetime rule
        self.cuts = 0
        self._strikes = _Strikes()
        self._silence_new = False
        # last, as it starts accepting connections, which the rules above judge
        super().__init__((host or config.DB_HOST, port or config.DB_PORT), rtt_ms / 2000, address)
        if self._lifetimes.close_any:
            threading.Thread(target=self._close_by_lifetime, daemon=True).start()

    # the lifetime rules it was made with, read only
    forget_idle_after = property(lambda self: self._lifetimes.forget_idle_after)
    close_after = property(lambda self: self._lifetimes.close_after)
    close_idle_after = property(lambda self: self._lifetimes.close_idle_after)

    def cut_next_reply(self, connection=None, statement=None, times=1):
        self._arm(connection, False, statement, times)

    def cut_next_statement(self, connection=None, statement=None, times=1):
        self._arm(connection, True, statement, times)

    def drop_silently(self, connection=None, new_connections=False):
        """Stop forwarding ``connection``'s packets (or every open connection's), closing nothing."""
        with self._lock:
            for link in [self._link_of(connection)] if connection is not None else self._links.values():
                link.silenced = True
            self._silence_new = self._silence_new or new_connections

    def _arm(self, connection, before, statement, times):
        prefix = statement.upper().encode() if statement else None
        with self._lock:
            if connection is not None:
                links = {self._link_of(connection)}
            elif prefix is None:
                self._forget_closed_links()
                links = set(self._links.values())
            else:
                links = None
            self._strikes.arm(_Rule(before, prefix, times, links))

    def _admit(self, link):
        link.silenced = self._silence_new  # drop_silently(new_connections=True): no greeting either

    def _judge(self, link, data, to_server):
        """Swallowed when the link is (now) dropped silently: dropped, or idle past ``forget_idle_after``;
        the link cut when a rule strikes ``data`` (counted in ``cuts``); else passed on."""
        with self._lock:
            now = time.monotonic()
            if self._lifetimes.forgets(link, now):
                link.silenced = True
            link.last_used = now
            if link.silenced:
                return _Verdict.SWALLOW
            if not self._strikes.cut(link, data, to_server):
                return _Verdict.PASS
            self.cuts += 1
            return _Verdict.CUT

    def _close_by_lifetime(self, every=0.01):
        """Hang up each connection past ``close_after`` seconds of age or ``close_idle_after`` of idleness."""
        while not self._closed:
            time.sleep(every)
            now, due = time.monotonic(), []
            with self._lock:
                for link in self._links.values():
                    if link.server.fileno() == -1 or link.opened is None:
                        continue
                    rule = self._lifetimes.closes(link, now)
                    if rule is not None:
                        self.closed[rule] += 1
                        link.opened = None  # counted once: no rule strikes it again
                        due.append(link)
            for link in due:
                link.hang_up()


@dataclass(eq=False)  # each one is itself: two alike are two rules
class _Rule:
    """Strikes the next ``left`` statements that start with ``prefix`` (any, when None) on ``links`` (any
    connection, when None): the statement itself when ``before``, else its answer."""
    before: bool
    prefix: bytes | None
    left: int
    links: set | None

    def matches(self, link, packet):
        return (self.links is None or link in self.links) and _is_statement(packet, self.prefix)


class _Strikes:
    """The cuts that ``cut_next_statement()`` and ``cut_next_reply()`` arm, and what they strike. The relay
    calls it holding its lock."""

    def __init__(self):
        self.rules: list[_Rule] = []  # in the order they were armed: the first that matches strikes

    def arm(self, rule):
        self.rules.append(rule)

    def cut(self, link, data, to_server):
        """True when ``data`` is to be dropped and the link cut: an answer that is due to be dropped, or a
        statement struck before it reaches the server. A statement whose answer is struck goes through,
        and its answer is then due."""
        if not to_server:
            due, link.reply_due = link.reply_due, False
            return due
        rule = next((rule for rule in self.rules if rule.matches(link, data)), None)
        if rule is None:
            return False
        rule.left -= 1
        if rule.left == 0:
            self.rules.remove(rule)
        if not rule.before:
            link.reply_due = True
        return rule.before


@dataclass(frozen=True)
class _Lifetimes:
    """The rules on a connection's idleness and age, in seconds (None: no such rule). A NAT's,
    ``forget_idle_after``: a connection idle longer is dropped silently when it is next used. A proxy's,
    ``close_after`` (its age) and ``close_idle_after`` (no packet either way): it is hung up on both sides."""
    forget_idle_after: float | None = None
    close_after: float | None = None
    close_idle_after: float | None = None

    @property
    def close_any(self):
        return self.close_after is not None or self.close_idle_after is not None

    def forgets(self, link, now):
        """True when ``link`` has been idle longer than ``forget_idle_after``."""
        return self.forget_idle_after is not None and link.idle(now) > self.forget_idle_after

    def closes(self, link, now):
        """The rule that hangs ``link`` up now, ``"age"`` or ``"idle"``; None when neither does."""
        if self.close_after is not None and now - link.opened >= self.close_after:
            return "age"
        if self.close_idle_after is not None and link.idle(now) >= self.close_idle_after:
            return "idle"
        return None


@dataclass(eq=False)  # each one is itself: rules hold sets of them
class _Link:
    """One connection through the relay: the client's socket and the server's, and what the rules know of it."""
    client: socket.socket
    server: socket.socket
    opened: float | None  # when it was accepted (monotonic); None once ended, or hung up by a lifetime rule
    last_used: float | None  # when a packet last went through; None once ended
    silenced: bool = False  # dropped silently: nothing goes through, either way, and nothing is closed
    reply_due: bool = False  # a statement went through that strikes its answer: the next answer is dropped

    def idle(self, now):
        """Seconds since a packet last went through (0 once ended)."""
        return now - (now if self.last_used is None else self.last_used)

    def hang_up(self):
        for end in (self.client, self.server):
            _hang_up(end)


class _Delayed:
    """Sends what the relay received to ``sink`` ``delay`` seconds after it arrived, in order, from a
    thread of its own: packets in flight overlap, as on a network (a burst of TLS handshake records
    takes one delay, not one each)."""

    def __init__(self, sink, delay):
        self.sink, self.delay, self.queue = sink, delay, queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def send(self, data):
        self.queue.put((time.monotonic() + self.delay, data))

    def hang_up_after(self, *ends):
        self.queue.put((time.monotonic() + self.delay, ends))

    def _run(self):
        while True:
            due, item = self.queue.get()
            time.sleep(max(0.0, due - time.monotonic()))
            if isinstance(item, tuple):
                for end in item:
                    _hang_up(end)
                return
            try:
                self.sink.sendall(item)
            except OSError:
                pass  # hung up meanwhile: what follows is dropped, up to the hang-up


def _still_in_the_relay(link):
    """The server's end of ``link`` has something unread, bytes or its hang-up, or the relay has
    closed it and not yet the client's end (a link dropped silently keeps it from the client on
    purpose: never)."""
    if link.silenced or link.client.fileno() == -1:
        return False
    if link.server.fileno() == -1:
        return True  # the relay closed the server's end; the client's closes next, or after the delay
    try:
        link.server.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"" at the hang-up
    except BlockingIOError:
        return False  # nothing waiting
    except OSError:
        pass  # reset by the server: still to be passed on
    return True


def _is_statement(packet, prefix):
    """True when ``packet`` carries a text statement (starting with ``prefix``, if given)."""
    if len(packet) < 5 or packet[3] != 0 or packet[4] != COM_QUERY:  # a command starts at sequence 0
        return False
    return prefix is None or packet[5:].lstrip().upper().startswith(prefix)


def _local_port(connection):
    """The client's own port of a MySQLdb connection: the port the relay sees it come from.
    (``OSError`` or ``ValueError`` when the client has closed its socket already.)"""
    with socket.socket(fileno=os.dup(connection.fileno())) as sock:
        return sock.getsockname()[1]


def _wake(listener):
    """Connect to ``listener`` once: a thread blocked in its ``accept()`` returns (shutting a listener
    down wakes it on Linux only)."""
    try:
        socket.create_connection(listener.getsockname()[:2], timeout=1).close()
    except OSError:
        pass  # nothing listens: nothing waits


def _hang_up(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
