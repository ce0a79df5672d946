"""Reading raw messages from disk: one .eml file, an mbox file, a Maildir, or a folder of any of these."""

from __future__ import annotations

import mailbox
from collections.abc import Callable, Iterator
from pathlib import Path

ErrorHandler = Callable[[str, OSError], None]


def iter_messages(path: Path, *, on_error: ErrorHandler | None = None) -> Iterator[tuple[str, bytes]]:
    """``(display name, raw bytes)`` for every message at ``path``.

    A file starting with ``From `` is an mbox (each message is ``<file>#<n>``, from 1); any other file is one
    message. A folder with ``cur/`` and ``new/`` is a Maildir (``new/`` then ``cur/``, each sorted by name);
    any other folder yields every file inside, recursively, sorted by path. An unreadable file or folder
    raises ``OSError`` unless ``on_error`` is given, which is then called with its name and the error and
    the walk goes on.
    """
    try:
        if path.is_dir():
            if (path / "cur").is_dir() and (path / "new").is_dir():
                yield from _maildir(path, on_error)
            else:
                for child in sorted(path.iterdir()):
                    if not child.name.startswith("."):
                        yield from iter_messages(child, on_error=on_error)
            return
        with path.open("rb") as handle:
            start = handle.read(5)
        if start == b"From ":
            yield from _mbox(path)
        else:
            yield str(path), path.read_bytes()
    except OSError as error:
        if on_error is None:
            raise
        on_error(str(path), error)


def _maildir(path: Path, on_error: ErrorHandler | None) -> Iterator[tuple[str, bytes]]:
    for sub in ("new", "cur"):
        for child in sorted((path / sub).iterdir()):
            if child.is_file() and not child.name.startswith("."):
                try:
                    yield str(child), child.read_bytes()
                except OSError as error:
                    if on_error is None:
                        raise
                    on_error(str(child), error)


def _mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(path, create=False)
    try:
        for number, key in enumerate(box.iterkeys(), start=1):
            yield f"{path}#{number}", box.get_bytes(key)
    finally:
        box.close()
