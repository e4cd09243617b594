"""The server's status flags after each statement, read where the client library keeps them.

Every answer of the server carries its status flags ("a transaction is open", "autocommit is
on", "the session changed", ...), and libmariadb (MariaDB Connector/C, which mysqlclient is built
on here) keeps the last ones in its ``MYSQL`` struct, whose address mysqlclient hands out. Reading
them sends nothing. ``read()`` asks libmariadb through ``mariadb_get_infov()``: sure, but a
foreign call costs microseconds from Python. ``field()`` finds the flags' place in the struct
once (beside the thread id and port the connection knows, as ``mysql.h`` lays them out), checks it
against ``read()`` on each new connection, and after that reads them as a plain number.
"""
import ctypes
import ctypes.util
import sys

import MySQLdb

IN_TRANSACTION = 1  # a transaction is open
AUTOCOMMIT = 2  # autocommit is on: with it off, every statement is in a transaction
MORE_RESULTS = 8  # more results follow (a procedure's, a multi-statement string's): not the last flags
SESSION_STATE_CHANGED = 16384  # the statement changed the session (with session_track_state_change)
_SERVER_STATUS = 30  # MARIADB_CONNECTION_SERVER_STATUS, for mariadb_get_infov()


def _libmariadb():
    """libmariadb's ``mariadb_get_infov``, when mysqlclient is built on it; else None."""
    path = ctypes.util.find_library("mariadb")
    if path is None or not MySQLdb.get_client_info().startswith("3."):  # Connector/C 3.x, not libmysqlclient
        return None
    get_info = getattr(ctypes.CDLL(path), "mariadb_get_infov", None)
    if get_info is not None:
        get_info.argtypes, get_info.restype = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p], ctypes.c_int
    return get_info


_get_info = _libmariadb()
AVAILABLE = _get_info is not None
_pointer_of = ctypes.pythonapi.PyCapsule_GetPointer
_pointer_of.argtypes, _pointer_of.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_void_p


def _address(conn):
    """The address of a mysqlclient connection's ``MYSQL`` struct."""
    return _pointer_of(conn._get_native_connection(), b"_mysql.connection.native_connection")


def read(conn):
    """The flags of the last answer on ``conn``, asked of libmariadb."""
    flags = ctypes.c_uint()  # a buffer of the call's own: another thread may be reading another's
    _get_info(_address(conn), _SERVER_STATUS, ctypes.byref(flags))
    return flags.value


_offset = None  # where in MYSQL the flags lie, once found


def _find_offset(conn, address, size=4096):
    """mysql.h: ``unsigned long thread_id, packet_length; unsigned int port; unsigned long
    client_flag, server_capabilities; unsigned int protocol_version, field_count, server_status``:
    the flags lie 48 bytes past the thread id (on a 64-bit machine), with the port 16 past it and
    protocol version 10 at 40."""
    memory = ctypes.string_at(address, size)

    def number(at, width):
        return int.from_bytes(memory[at:at + width], sys.byteorder)
    for at in range(0, size - 52, 8):
        if number(at, 8) == conn.thread_id() and number(at + 16, 4) == conn.port and number(at + 40, 4) == 10:
            return at + 48
    return None


def field(conn):
    """The flags of ``conn`` as a ctypes number over their place in its ``MYSQL`` struct (read its
    ``.value`` after each statement), or None where that place cannot be found and checked."""
    global _offset
    if not AVAILABLE or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    address = _address(conn)
    if _offset is None:
        _offset = _find_offset(conn, address)
    if _offset is None:
        return None
    flags = ctypes.c_uint.from_address(address + _offset)
    return flags if flags.value == read(conn) else None
