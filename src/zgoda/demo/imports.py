"""A demo import: a shop's customer export with consent columns, two bad rows, run as a real job."""

from __future__ import annotations

import io
import random
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zgoda.consent import sources
from zgoda.contacts.imports import service as imports
from zgoda.contacts.imports.models import ImportJob
from zgoda.core.db import Database

SHOP_EXPORT_NAME = "eksport-klientow-sklep-2026-11.csv"
CUSTOMERS = [
    ("Helena", "Sadowska", "Wrocław"), ("Bartosz", "Czarnecki", "Łódź"), ("Weronika", "Sikora", "Lublin"),
    ("Kamil", "Baran", "Szczecin"), ("Julia", "Rutkowska", "Toruń"), ("Szymon", "Michalak", "Katowice"),
    ("Alicja", "Ostrowska", "Rzeszów"), ("Filip", "Tomaszewski", "Gdynia"), ("Maja", "Pietrzak", "Opole"),
    ("Oskar", "Marciniak", "Kielce"), ("Lena", "Wróblewska", "Białystok"), ("Igor", "Jasiński", "Olsztyn"),
]  # fmt: skip


def shop_export(seed: int = 11) -> bytes:
    """A semicolon CSV in Windows-1250, as the shop's admin panel exports it."""
    rng = random.Random(seed)  # noqa: S311 - deterministic demo data, not security
    lines = ["Nr klienta;E-mail;Telefon;Imię;Nazwisko;Miasto;Zgoda newsletter;Zgoda SMS;Data zgody"]
    for number, (first, last, city) in enumerate(CUSTOMERS, start=5001):
        email = f"{first.lower()}.{last.lower()}@example.com".translate(str.maketrans("ąćęłńóśźż", "acelnoszz"))
        phone = f"5{rng.randrange(10, 99)} {rng.randrange(100, 999)} {rng.randrange(100, 999)}"
        newsletter = rng.choice(["tak", "tak", "nie", ""])
        sms = rng.choice(["tak", "nie", "", ""])
        lines.append(
            f"K-{number};{email};{phone};{first};{last};{city};{newsletter};{sms};2026-10-{number % 28 + 1:02d}"
        )
    lines.append("K-5099;adres-bez-malpy.example.com;;Błędny;Adres;Kraków;tak;;2026-10-03")
    lines.append("K-5100;ktos@example.com;;Ktoś;Niepewny;Poznań;może;;2026-10-04")
    return ("\r\n".join(lines) + "\r\n").encode("cp1250")


def queue_shop_import(session: Session, *, storage_dir: Path) -> int | None:
    """Create the demo's import job once (the caller runs it after committing)."""
    if (session.scalar(select(func.count(ImportJob.id))) or 0) > 0:
        return None
    shop = sources.source_by_name(session, "Sklep internetowy")
    staged = imports.stage_file(io.BytesIO(shop_export()), filename=SHOP_EXPORT_NAME, data_dir=storage_dir)
    planned = imports.create_job(session, source_id=shop.id, staged=staged)
    return planned.job.id


def run_queued(database: Database, job_id: int | None) -> None:
    if job_id is not None:
        imports.run_job(database, job_id)
