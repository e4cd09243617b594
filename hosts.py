"""Failover's host walk: of several servers, connect to the one that takes writes.

A proxy in front of a primary and its replica may still send connections to the old primary, or
to a replica, for a while after a failover; a client that knows every server can ask each.
"""
import MySQLdb

from errors import NOT_READY


# One round trip: read-only or not, and, on a Galera node, whether it is part of the cluster (a node
# cut off from the others still answers what touches no table, this too, and refuses the rest: 1047).
WRITABLE = ("SELECT @@read_only, @@wsrep_on, "
            "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_READY')")
UNKNOWN_VARIABLE = 1193  # a server without Galera's variables (MySQL's own)


def takes_writes(conn):
    """True when the server of a driver connection takes writes: ``@@read_only`` is off, and a
    Galera node (``@@wsrep_on``) is ready (``wsrep_ready``: in the cluster's primary component)."""
    cursor = conn.cursor()
    try:
        cursor.execute(WRITABLE)
    except MySQLdb.OperationalError as error:
        if error.args[0] == NOT_READY:
            return False
        if error.args[0] != UNKNOWN_VARIABLE:
            raise
        cursor.execute("SELECT @@read_only")
        return not cursor.fetchone()[0]
    read_only, galera, ready = cursor.fetchone()
    return not read_only and (not galera or ready == "ON")


def connect_to_writable(hosts, connect):
    """Walk ``hosts`` once, in order, connecting with ``connect(host, port)``: the first that takes
    writes, or else the first that answered (reads work there; writes wait for a promotion). Each
    attempt is bounded by the connection's ``connect_timeout`` and its query by ``read_timeout``."""
    fallback, failure = None, None
    for host, port in hosts:
        try:
            conn = connect(host, port)
        except MySQLdb.OperationalError as error:
            failure = error
            continue
        if takes_writes(conn):
            if fallback is not None:
                fallback.close()
            return conn
        if fallback is None:
            fallback = conn
        else:
            conn.close()
    if fallback is not None:
        return fallback
    raise failure
