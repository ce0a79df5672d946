"""Intake from a mailbox: DSNs, ARF complaints and mailto unsubscribes read from files, a Maildir and IMAP."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.factories import as_system
from tests.support.sending import SendingSetup, sending_setup
from zgoda.campaigns.links import new_send_ref
from zgoda.campaigns.models import Send, SendStatus
from zgoda.consent.models import ConsentState
from zgoda.core.db import Database
from zgoda.feedback import suppression
from zgoda.feedback.intake import ImapSettings, ingest_paths, poll_imap
from zgoda.feedback.models import SendEvent


def _dsn(ref: str, recipient: str, status: str = "5.1.1", diagnostic: str = "550 5.1.1 User unknown") -> bytes:
    return f"""From: MAILER-DAEMON@mx.example.net
To: bounces+{ref}@kawiarnia.example.pl
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

Your message could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {recipient}
Action: failed
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--b1
Content-Type: text/rfc822-headers

Message-ID: <{ref}@kawiarnia.example.pl>
X-Zgoda-Ref: {ref}
To: {recipient}

--b1--
""".replace("\n", "\r\n").encode()


def _mailto_unsubscribe(ref: str) -> bytes:
    headers = f"From: klient@example.pl\r\nTo: unsubscribe+{ref}@kawiarnia.example.pl\r\nSubject: unsubscribe\r\n"
    return (headers + "\r\n").encode()


def _sent(session: Session, setup: SendingSetup, index: int) -> Send:
    send = Send(
        campaign_id=setup.campaign.id, contact_id=setup.eligible[index].id, ref=new_send_ref(), status=SendStatus.SENT
    )
    session.add(send)
    session.flush()
    return send


@pytest.fixture
def mailbox(session: Session, tmp_path: Path) -> tuple[SendingSetup, list[Send], Path]:
    setup = sending_setup(session, eligible=2)
    sends = [_sent(session, setup, 0), _sent(session, setup, 1)]
    session.commit()
    maildir = tmp_path / "bounces"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.dsn").write_bytes(_dsn(sends[0].ref or "", setup.eligible[0].email or ""))
    (maildir / "new" / "2.unsub").write_bytes(_mailto_unsubscribe(sends[1].ref or ""))
    (maildir / "new" / "3.stranger").write_bytes(_dsn("b" * 26, "nobody@example.org"))
    return setup, sends, maildir


def test_a_maildir_is_applied_once_however_often_it_is_read(
    db: Database, session: Session, mailbox: tuple[SendingSetup, list[Send], Path]
) -> None:
    setup, sends, maildir = mailbox
    first = ingest_paths(db, [maildir])
    assert first.messages == 3
    assert first.outcomes == {"recorded": 2, "ignored": 1}
    second = ingest_paths(db, [maildir])
    assert second.outcomes == {"duplicate": 2, "ignored": 1}
    as_system(session, setup.workspace)
    assert session.scalar(select(func.count(SendEvent.id))) == 2
    hard = suppression.is_suppressed(session, setup.eligible[0].email or "")
    assert hard is not None and hard.reason == "hard_bounce"
    state = session.scalar(select(ConsentState).where(ConsentState.contact_id == sends[1].contact_id))
    assert state is not None and state.status == "withdrawn"


class _ImapHandler(socketserver.StreamRequestHandler):
    """Just enough IMAP4rev1 for a client that logs in, searches UNSEEN, fetches and flags messages."""

    messages: ClassVar[dict[int, bytes]] = {}
    seen: ClassVar[set[int]] = set()

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self._say("* OK test IMAP ready")
        while line := self.rfile.readline().decode().strip():
            tag, command, *rest = line.split(" ")
            command = command.upper()
            argument = " ".join(rest)
            if command == "CAPABILITY":
                self._say("* CAPABILITY IMAP4rev1")
            elif command == "SELECT":
                self._say(f"* {len(self.messages)} EXISTS")
            elif command == "UID" and argument.upper().startswith("SEARCH"):
                unseen = " ".join(str(uid) for uid in sorted(self.messages) if uid not in self.seen)
                self._say(f"* SEARCH {unseen}".rstrip())
            elif command == "UID" and argument.upper().startswith("FETCH"):
                uid = int(rest[1])
                body = self.messages[uid]
                self.wfile.write(f"* {uid} FETCH (UID {uid} BODY[] {{{len(body)}}}\r\n".encode() + body + b")\r\n")
            elif command == "UID" and argument.upper().startswith("STORE"):
                self.seen.add(int(rest[1]))
            elif command == "LOGOUT":
                self._say("* BYE")
                self._say(f"{tag} OK LOGOUT completed")
                return
            self._say(f"{tag} OK {command} completed")


@pytest.fixture
def imap_server() -> Iterator[tuple[socketserver.TCPServer, type[_ImapHandler]]]:
    handler = type("Handler", (_ImapHandler,), {"messages": {}, "seen": set()})
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_the_bounce_mailbox_is_read_over_imap(
    db: Database,
    session: Session,
    mailbox: tuple[SendingSetup, list[Send], Path],
    imap_server: tuple[socketserver.TCPServer, type[_ImapHandler]],
) -> None:
    _, _, maildir = mailbox
    server, handler = imap_server
    handler.messages = {uid: path.read_bytes() for uid, path in enumerate(sorted((maildir / "new").iterdir()), 1)}
    settings = ImapSettings(
        host="127.0.0.1", port=server.server_address[1], username="u", password="p", security="none"
    )
    report = poll_imap(db, settings)
    assert report.messages == 3
    assert report.outcomes == {"recorded": 2, "ignored": 1}
    assert handler.seen == {1, 2, 3}
    again = poll_imap(db, settings)
    assert again.messages == 0


def test_a_local_bounce_maildir_is_polled_and_applied_messages_move_to_cur(
    db: Database, session: Session, mailbox: tuple[SendingSetup, list[Send], Path]
) -> None:
    from zgoda.feedback.intake import poll_maildir

    setup, _, maildir = mailbox
    report = poll_maildir(db, maildir)
    assert (report.messages, report.outcomes["recorded"]) == (3, 2)
    assert list((maildir / "new").iterdir()) == []
    assert sorted(p.name for p in (maildir / "cur").iterdir()) == ["1.dsn:2,S", "2.unsub:2,S", "3.stranger:2,S"]
    assert poll_maildir(db, maildir).messages == 0
    as_system(session, setup.workspace)
    assert session.scalar(select(func.count(SendEvent.id))) == 2
