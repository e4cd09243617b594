"""The chaos run's requests, as a WSGI app, and the schema they run against (``bench/chaos.py``).

Each kind of request is a method of ``ChaosApp``: ``read``, ``write``, ``atomic``,
``raw_transaction``, and the ones whose text hides what they do: ``view_read`` (a ``SELECT``
through a view whose stored function inserts a row), ``procedure_transaction`` (``CALL`` begins
the transaction, the app finishes it), ``implicit_commit`` (a DDL statement inside ``atomic()``)
and ``slow_read`` (slower than the app's ``read_timeout``; ``RunCounter`` counts the copies the
server runs). Every row a request writes carries its request id and a part number.
"""
import threading
import time
from contextlib import contextmanager
from urllib.parse import parse_qs

from werkzeug.wrappers import Request, Response

import faults
import pair
import strategies as S
from bench import clusters

SCHEMA = [
    "DROP TABLE IF EXISTS chaos_write, chaos_scratch",
    "DROP VIEW IF EXISTS chaos_view",
    "DROP FUNCTION IF EXISTS chaos_note",
    "DROP PROCEDURE IF EXISTS chaos_begin",
    "CREATE TABLE chaos_write (id INT AUTO_INCREMENT PRIMARY KEY, request_id INT NOT NULL, part INT NOT NULL)",
    # A stored function that writes, called by a view: reading the view for a request id inserts a row.
    # DETERMINISTIC, or a server that keeps a binary log (the replica pair's) refuses it (1418); the
    # pair replicates rows, and one read still inserts one row.
    "CREATE FUNCTION chaos_note(request_id INT) RETURNS INT DETERMINISTIC MODIFIES SQL DATA "
    "BEGIN INSERT INTO chaos_write (request_id, part) VALUES (request_id, 0); RETURN request_id; END",
    "CREATE VIEW chaos_view AS SELECT seq AS request_id, chaos_note(seq) AS noted FROM seq_1_to_1000000",
    # A procedure that begins a transaction, and leaves it open for the app to finish.
    "CREATE PROCEDURE chaos_begin(request_id INT) "
    "BEGIN START TRANSACTION; INSERT INTO chaos_write (request_id, part) VALUES (request_id, 0); END",
]
CLEAN_UP = SCHEMA[:4]


class RunCounter(threading.Thread):
    """Counts the server's copies of one statement while the request runs and after: the
    connections ``SHOW PROCESSLIST`` shows running a statement that ends with ``marker``, polled
    every 50 ms over a connection of its own until none is left once the request has ended.
    ``copies()`` waits for that, and raises if the count could not be completed."""

    def __init__(self, marker, port=None, longest=10):
        super().__init__(daemon=True)
        self.marker, self.port, self.longest = marker, port, longest
        self.ended, self.seen, self.error = threading.Event(), set(), None
        self.start()

    def copies(self):
        """How many copies the server ran; waits until they have all ended."""
        self.join()
        if self.error is not None:
            raise RuntimeError(f"the copies of '{self.marker}' could not all be counted") from self.error
        return len(self.seen)

    def run(self):
        try:
            self._count()
        except Exception as error:  # e.g. the server restarted under it: said by copies(), never a silent undercount
            self.error = error

    def _count(self):
        admin = faults._admin(self.port)
        try:
            cursor, deadline = admin.cursor(), None
            while deadline is None or time.monotonic() < deadline:
                ended = self.ended.is_set()
                cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                               "AND INFO LIKE %s", ("%" + self.marker,))
                running = {row[0] for row in cursor.fetchall()}
                self.seen |= running
                if ended and not running:
                    return
                if ended and deadline is None:
                    deadline = time.monotonic() + self.longest
                time.sleep(0.05)
        finally:
            admin.close()


class ChaosApp:
    """The requests of the run as a WSGI app: ``/<kind>/<request id>?fault=<fault>``; each runs in
    ``strategy.request()`` and answers ``ok``, or 500 with the error's class and code."""

    def __init__(self, strategy, link, cluster=None, read_timeout=1):
        self.strategy, self.link, self.cluster = strategy, link, cluster
        self.slow_s = read_timeout + 0.5  # a slow read outlasts the app's read_timeout by half a second
        self.expiring = []  # the connections an expire fault shortened the wait_timeout of
        self.counters = {}  # request id -> the RunCounter of its slow read
        self.cluster_faults = clusters.Faults(cluster)  # what strikes the cluster between batches

    def kill_port(self):
        """Where a ``KILL`` must run: the server that holds the app's connections."""
        return pair.port_of(pair.primary()) if self.cluster in pair.MODES else None

    def __call__(self, environ, start_response):
        request = Request(environ)
        _, kind, request_id = request.path.split("/")
        fault = parse_qs(request.query_string.decode()).get("fault", [None])[0]
        try:
            with self.strategy.request() as db:
                getattr(self, kind)(db, int(request_id), fault)
            response = Response("ok")
        except Exception as error:  # every failure is counted by its class: none may be hidden
            response = Response(f"{type(error).__name__} {S.error_code(error)}", status=500)
        return response(environ, start_response)

    def insert(self, db, request_id, part):
        db.execute_sql("INSERT INTO chaos_write (request_id, part) VALUES (%s, %s)", (request_id, part))

    def arm(self, db, fault, statement="INSERT"):
        """The cuts, on this request's own connection (a dead one has nothing left to cut), at
        its next ``statement`` (its next ``COMMIT`` for a cut after one)."""
        cuts = {"cut_before_insert": self.link.cut_next_statement, "cut_after_insert": self.link.cut_next_reply,
                "cut_after_commit": self.link.cut_next_reply}
        if fault not in cuts:
            return
        if db.is_closed():
            db.connect()  # a thread's first request: the connection its statement would open
        try:
            cuts[fault](db.connection(), statement="COMMIT" if fault == "cut_after_commit" else statement)
        except (OSError, ValueError):
            pass  # its socket is closed already: the request meets the dead connection as it is

    def read(self, db, request_id, fault):
        if fault == "kill_during":
            with faults.kill_during(S.connection_id(db), after=0.05, port=self.kill_port()):
                return db.execute_sql("SELECT SLEEP(0.3)").fetchone()
        return db.execute_sql("SELECT 1").fetchone()

    def write(self, db, request_id, fault):
        self.arm(db, fault)
        self.insert(db, request_id, 0)

    def atomic(self, db, request_id, fault):
        if self.cluster == "galera":  # conflicts are part of life there: run_transaction runs it again
            first_try = [fault]
            return S.run_transaction(db, lambda db: self.two_inserts(db, request_id, first_try.pop() if first_try
                                                                     else None))
        with db.atomic():
            self.two_inserts(db, request_id, fault)

    def two_inserts(self, db, request_id, fault):
        self.arm(db, fault)
        self.insert(db, request_id, 0)
        self.kill_if(db, fault)
        self.insert(db, request_id, 1)

    def raw_transaction(self, db, request_id, fault):
        db.execute_sql("START TRANSACTION")
        with self.rolled_back_on_error(db):
            self.insert(db, request_id, 0)
            self.kill_if(db, fault)
            self.arm(db, fault)
            self.insert(db, request_id, 1)
            db.execute_sql("COMMIT")

    def procedure_transaction(self, db, request_id, fault):
        """The procedure begins the transaction and inserts part 0; the app inserts part 1 and commits."""
        with self.rolled_back_on_error(db):
            db.execute_sql("CALL chaos_begin(%s)", (request_id,))
            self.kill_if(db, fault)
            self.insert(db, request_id, 1)
            db.execute_sql("COMMIT")

    def implicit_commit(self, db, request_id, fault):
        """Two inserts in ``atomic()`` with a DDL statement between: the server commits part 0 there."""
        with db.atomic():
            self.insert(db, request_id, 0)
            db.execute_sql("CREATE TABLE IF NOT EXISTS chaos_scratch (id INT)")  # an implicit commit
            self.kill_if(db, fault)
            self.insert(db, request_id, 1)

    def view_read(self, db, request_id, fault):
        """A ``SELECT`` that writes: the view's stored function inserts part 0."""
        self.arm(db, fault, statement="SELECT")
        return db.execute_sql("SELECT noted FROM chaos_view WHERE request_id = %s", (request_id,)).fetchone()

    def slow_read(self, db, request_id, fault):
        """A read that outlasts the app's ``read_timeout``, its copies on the server counted."""
        marker = f"AS chaos_slow_{request_id}"
        counter = self.counters[request_id] = RunCounter(marker, self.kill_port(), longest=self.slow_s + 2)
        try:
            return db.execute_sql(f"SELECT SLEEP({self.slow_s}) {marker}").fetchone()
        finally:
            counter.ended.set()

    @contextmanager
    def rolled_back_on_error(self, db):
        """A transaction begun by hand: on an error, ``ROLLBACK`` while the connection is there."""
        try:
            yield
        except BaseException:
            if not db.is_closed():
                try:
                    db.execute_sql("ROLLBACK")
                except Exception:
                    pass  # the connection is gone: the server rolled back already
            raise

    def kill_if(self, db, fault):
        if fault == "kill_in_transaction":
            self.kill_between(S.connection_id(db))
        elif fault == "conflict":
            clusters.conflict(db)

    def kill_between(self, connection_id):
        """A ``KILL`` between two statements: the server has closed the connection before the next is sent."""
        faults.kill(connection_id, self.kill_port())
        faults.wait_until_closed([connection_id], self.kill_port())
        self.link.wait_until_passed_on()  # the server's hang-up, to the app

    def expire(self, db, request_id, fault):
        faults.expire_after(db, 1)
        self.expiring.append(S.connection_id(db))
