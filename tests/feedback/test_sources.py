"""iter_messages over .eml files, mbox files, Maildirs and plain folders."""

from __future__ import annotations

import mailbox
import os
from pathlib import Path

import pytest

from zgoda.feedback.parsing import iter_messages

ONE = b"From: a@example.com\nSubject: one\n\nbody one\n"
TWO = b"From: b@example.com\nSubject: two\n\nbody two\nFrom the start of a line\n"


def test_single_file(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(ONE)
    assert list(iter_messages(path)) == [(str(path), ONE)]


def test_empty_file_is_one_empty_message(tmp_path: Path) -> None:
    path = tmp_path / "empty.eml"
    path.write_bytes(b"")
    assert list(iter_messages(path)) == [(str(path), b"")]


def test_mbox(tmp_path: Path) -> None:
    path = tmp_path / "box.mbox"
    box = mailbox.mbox(path)
    box.add(ONE)
    box.add(TWO)
    box.close()
    found = list(iter_messages(path))
    assert [name for name, _ in found] == [f"{path}#1", f"{path}#2"]
    assert b"Subject: one" in found[0][1]
    assert b"Subject: two" in found[1][1]
    assert b"From the start of a line" in found[1][1]  # mboxo ">From" quoting undone by mailbox


def test_maildir_new_then_cur_sorted(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "md")
    box.close()
    (tmp_path / "md" / "new" / "b").write_bytes(TWO)
    (tmp_path / "md" / "new" / "a").write_bytes(ONE)
    (tmp_path / "md" / "cur" / "c:2,S").write_bytes(ONE)
    (tmp_path / "md" / "tmp" / "half-written").write_bytes(b"ignored")
    names = [Path(name).relative_to(tmp_path / "md").as_posix() for name, _ in iter_messages(tmp_path / "md")]
    assert names == ["new/a", "new/b", "cur/c:2,S"]


def test_plain_folder_recursive_sorted_skipping_hidden(tmp_path: Path) -> None:
    (tmp_path / "z.eml").write_bytes(ONE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.eml").write_bytes(TWO)
    (tmp_path / ".hidden").write_bytes(ONE)
    names = [Path(name).relative_to(tmp_path).as_posix() for name, _ in iter_messages(tmp_path)]
    assert names == ["sub/a.eml", "z.eml"]


def test_missing_path_raises_without_handler(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(iter_messages(tmp_path / "nope.eml"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_file_goes_to_the_handler_and_the_walk_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(ONE)
    locked = tmp_path / "b.eml"
    locked.write_bytes(TWO)
    locked.chmod(0)
    (tmp_path / "c.eml").write_bytes(TWO)
    errors: list[str] = []
    try:
        names = [Path(name).name for name, _ in iter_messages(tmp_path, on_error=lambda n, e: errors.append(n))]
    finally:
        locked.chmod(0o600)
    assert names == ["a.eml", "c.eml"]
    assert errors == [str(locked)]
