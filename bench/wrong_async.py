"""A deliberately wrong asyncio driver, for the evidence that the cancel rule matters (chapter 10,
tests/test_asyncio.py): aiomysql without its guard, as asyncmy was before 0.2.13.

aiomysql closes a connection whose read was cancelled (``Connection._close_on_cancel``); asyncmy
did not, and handed the connection back to the pool in the middle of an answer. With
``cancel_guard_removed()`` aiomysql does the same: the connection stays open, and the next
request that gets it reads what was sent for the cancelled one.
"""
from contextlib import contextmanager

from aiomysql.connection import Connection


@contextmanager
def cancel_guard_removed():
    """Within the block, a cancelled read leaves aiomysql's connection open, mid-answer."""
    guard = Connection._close_on_cancel
    Connection._close_on_cancel = lambda self: None
    try:
        yield
    finally:
        Connection._close_on_cancel = guard
