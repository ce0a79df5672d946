"""COMMIT a SQLite transaction without releasing Python's interpreter lock.

The sender writes its final dots held in the kernel and then commits (campaigns/sending.py): a
process killed between the two delivers without recording. The standard ``sqlite3`` module
releases the interpreter lock around every SQLite call; releasing it wakes a thread waiting for it,
which on a busy machine can take the CPU from the committing thread right there, and a kill in that
moment duplicates the group's messages (measured: about one kill in 30). Called through
``ctypes.PyDLL`` (which keeps the lock), SQLite's own ``sqlite3_exec(db, "COMMIT")`` runs straight
after the dots.

The ``sqlite3*`` handle is the first field after the object header of a ``sqlite3.Connection`` in
CPython 3.11 to 3.13 (``Modules/_sqlite/connection.h``); elsewhere (another version, a debug build,
another interpreter), and whenever the handle does not answer as the connection says it should,
``commit_holding_gil`` returns False and the caller commits the usual way.
"""

from __future__ import annotations

import ctypes
import platform
import sqlite3
import sys
from typing import Any

_KNOWN_LAYOUT = (
    platform.python_implementation() == "CPython"
    and (3, 11) <= sys.version_info[:2] <= (3, 13)
    and not hasattr(sys, "gettotalrefcount")  # a debug build has a larger object header
)


def _library() -> ctypes.PyDLL | None:
    if not _KNOWN_LAYOUT:
        return None
    try:
        import _sqlite3

        library = ctypes.PyDLL(_sqlite3.__file__)  # the SQLite the module itself uses, found through it
        library.sqlite3_exec.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]
        library.sqlite3_exec.argtypes.append(ctypes.c_void_p)
        library.sqlite3_exec.restype = ctypes.c_int
        library.sqlite3_get_autocommit.argtypes = [ctypes.c_void_p]
        library.sqlite3_get_autocommit.restype = ctypes.c_int
        library.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        library.sqlite3_db_filename.restype = ctypes.c_char_p
    except (ImportError, OSError, AttributeError):
        return None
    return library


_LIBRARY = _library()
_HEADER = 2 * ctypes.sizeof(ctypes.c_void_p)  # ob_refcnt, ob_type
_checked: dict[int, int] = {}  # id(connection) -> its handle, once it answered as expected


def _handle(connection: sqlite3.Connection) -> int | None:
    """The connection's ``sqlite3*``, once it has answered like this connection (same file, in a transaction)."""
    if _LIBRARY is None or not isinstance(connection, sqlite3.Connection):
        return None
    handle = ctypes.c_void_p.from_address(id(connection) + _HEADER).value
    if not handle:
        return None
    if _checked.get(id(connection)) == handle:
        return handle
    (expected,) = connection.execute("SELECT file FROM pragma_database_list WHERE name = 'main'").fetchone()
    filename = _LIBRARY.sqlite3_db_filename(handle, b"main")
    if not expected or filename is None or filename.decode() != expected:
        return None
    if len(_checked) > 1000:  # connections come and go over a long life; a re-check costs one query
        _checked.clear()
    _checked[id(connection)] = handle
    return handle


def ready(connection: Any) -> bool:
    """Whether ``commit_holding_gil`` can commit this connection (checked once; call it before the moment)."""
    return _handle(connection) is not None


def commit_holding_gil(connection: Any) -> bool:
    """COMMIT the connection's open transaction in one call that keeps the interpreter lock; False if
    this connection cannot (the caller commits as usual). Raises ``sqlite3.OperationalError`` if SQLite
    refuses the COMMIT (the transaction is then still open)."""
    handle = _handle(connection)
    if handle is None or _LIBRARY is None or _LIBRARY.sqlite3_get_autocommit(handle):
        return False
    code = _LIBRARY.sqlite3_exec(handle, b"COMMIT", None, None, None)
    if code != 0:
        raise sqlite3.OperationalError(f"COMMIT failed (SQLite result code {code})")
    return True
