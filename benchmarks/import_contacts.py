"""Contact import benchmark: a Polish shop's export of N contacts through the real import, against a plain load.

Run: ``uv run python benchmarks/import_contacts.py [--rows N] [--database sqlite|postgresql|both] [--keep-file]``

The file: N contacts generated from ``random.Random(--seed)``, semicolon-delimited UTF-8 with a BOM (what
Polish Excel writes as "CSV UTF-8"): customer number, Polish first and last names with diacritics, a unique
email (about 0.1% malformed, which the import must reject), a unique Polish mobile number written in the
usual ways (``+48 601 234 567``, ``601 234 567``, ``601-234-567``; 80% of rows), street, postal code and
city, three consent columns (``email_marketing``, ``sms_marketing``, ``profiling``: tak/nie/1/0/x, empty, or
the date consent was given) and ``data_zgody``.

For each database: a fresh SQLite file in a temporary directory, or a fresh PostgreSQL database
(``CREATE DATABASE`` a unique name on ``--pg-url``, dropped at the end), migrated with
``zgoda.core.migrate.upgrade``; a workspace and a source made through the services. Then:

- baseline: the same file into a plain table with the same columns (all text, no key, index or
  constraint), in one transaction: PostgreSQL ``COPY ... FROM STDIN`` fed the file's bytes through psycopg;
  SQLite ``csv.reader`` + ``executemany``;
- import: in a child process, exactly what ``zgoda import`` does: ``stage_path``, ``create_job`` (mapping:
  the automatic one plus street, postal code and city as attributes) and ``run_job`` in its batches
  (``--batch`` to try another size).
  The time covers all three. Peak RSS is the child's ``VmHWM`` (``/proc/self/status``) when the import
  ends, also sampled every tenth of the rows to show it does not grow. Not ``ru_maxrss`` (from
  ``getrusage(RUSAGE_CHILDREN)`` or ``os.wait4``): Linux carries it across ``exec``, so a child forked from
  this process (which holds the generator's sets of a million addresses) reports at least the parent's peak.

Both steps run twice: on a file of N/10 rows and on N rows (each in its own fresh database), to show that
the peak memory stays flat whatever the file size. Goals (the issue): the import within 4x of the
baseline on PostgreSQL; peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pg_databases import create_pg_database, drop_pg_database  # beside this script
from sqlalchemy import event, func, select, text

from zgoda.accounts import service as accounts
from zgoda.consent import purposes, sources
from zgoda.consent.models import ConsentEvent
from zgoda.contacts.models import Contact
from zgoda.core.db import Database
from zgoda.core.migrate import upgrade
from zgoda.core.tenancy import Actor, bind_scope

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
RATIO_GOAL = 4.0
RSS_GOAL_MB = 300.0
SEED = 20260601
LOAD_AT_START = os.getloadavg()[0]
HEADERS = [
    "Nr klienta",
    "Imię",
    "Nazwisko",
    "E-mail",
    "Telefon",
    "Ulica",
    "Kod pocztowy",
    "Miasto",
    "email_marketing",
    "sms_marketing",
    "profiling",
    "data_zgody",
]
BASELINE_COLUMNS = [
    "nr_klienta",
    "imie",
    "nazwisko",
    "email",
    "telefon",
    "ulica",
    "kod_pocztowy",
    "miasto",
    "email_marketing",
    "sms_marketing",
    "profiling",
    "data_zgody",
]
ATTRIBUTES = {"street": "Ulica", "postal_code": "Kod pocztowy", "city": "Miasto"}

# --- the file ----------------------------------------------------------------------------------


def _split(text: str, separator: str | None = None) -> list[str]:
    return text.split(separator)


FEMALE = _split(
    "Anna Maria Katarzyna Małgorzata Agnieszka Barbara Ewa Krystyna Elżbieta Magdalena Joanna Zofia "
    "Aleksandra Monika Teresa Danuta Natalia Karolina Marta Beata Dorota Halina Jadwiga Janina Iwona "
    "Grażyna Bożena Urszula Justyna Renata Paulina Irena Alicja Jolanta Hanna Helena Wiktoria Agata "
    "Łucja Bogumiła Jagoda Żaneta Kinga Weronika Oliwia Julia Lena Świętosława Gabriela"
)
MALE = _split(
    "Jan Piotr Andrzej Krzysztof Stanisław Tomasz Paweł Józef Marcin Marek Michał Grzegorz Jerzy "
    "Tadeusz Adam Łukasz Zbigniew Ryszard Dariusz Henryk Mariusz Kazimierz Wojciech Robert Mateusz "
    "Marian Rafał Jacek Janusz Mirosław Maciej Sławomir Jarosław Kamil Wiesław Roman Władysław Jakub "
    "Artur Zdzisław Edward Mieczysław Damian Dawid Przemysław Sebastian Czesław Leszek Szymon Bartłomiej"
)
# surname stems: "-ski/-cki/-dzki" take "-ska/-cka/-dzka" for women; the rest are the same for both
SURNAMES_GENDERED = _split(
    "Kowalski Wiśniewski Wójcik Kamiński Lewandowski Zieliński Szymański Woźniak Dąbrowski Kozłowski "
    "Jankowski Mazurek Wojciechowski Kwiatkowski Krawczyk Kaczmarek Piotrowski Grabowski Pawłowski "
    "Michalski Nowakowski Adamczyk Dudek Zając Wieczorek Jabłoński Król Majewski Olszewski Jaworski "
    "Wróbel Malinowski Pawlak Witkowski Walczak Stępień Górski Rutkowski Michalak Sikora Ostrowski "
    "Baran Duda Szewczyk Tomaszewski Pietrzak Marciniak Wróblewski Zalewski Jakubowski Jasiński "
    "Zawadzki Sadowski Bąk Chmielewski Włodarczyk Borkowski Czarnecki Sawicki Sokołowski Urbański "
    "Kubiak Maciejewski Szczepański Kucharski Wilk Kalinowski Lis Mazur Wysocki Adamski Kaźmierczak "
    "Wasilewski Sobczak Czerwiński Andrzejewski Cieślak Głowacki Zakrzewski Kołodziej Sikorski "
    "Krajewski Gajewski Szymczak Szulc Baranowski Laskowski Brzeziński Makowski Ziółkowski Przybylski "
    "Łęcki Żurawski Śliwiński Żak Nowak Gąsiorowski Ćwikliński Świątek Łuczak Źrałek"
)
CITIES = [
    ("Warszawa", "00"),
    ("Kraków", "30"),
    ("Łódź", "90"),
    ("Wrocław", "50"),
    ("Poznań", "60"),
    ("Gdańsk", "80"),
    ("Szczecin", "70"),
    ("Bydgoszcz", "85"),
    ("Lublin", "20"),
    ("Białystok", "15"),
    ("Katowice", "40"),
    ("Gdynia", "81"),
    ("Częstochowa", "42"),
    ("Radom", "26"),
    ("Toruń", "87"),
    ("Sosnowiec", "41"),
    ("Rzeszów", "35"),
    ("Kielce", "25"),
    ("Gliwice", "44"),
    ("Olsztyn", "10"),
    ("Zielona Góra", "65"),
    ("Bielsko-Biała", "43"),
    ("Opole", "45"),
    ("Elbląg", "82"),
    ("Płock", "09"),
    ("Wałbrzych", "58"),
    ("Tarnów", "33"),
    ("Koszalin", "75"),
    ("Kalisz", "62"),
    ("Legnica", "59"),
    ("Grudziądz", "86"),
    ("Słupsk", "76"),
    ("Jastrzębie-Zdrój", "44"),
    ("Nowy Sącz", "33"),
    ("Świdnica", "58"),
    ("Żory", "44"),
    ("Skierniewice", "96"),
    ("Łomża", "18"),
    ("Ostrołęka", "07"),
    ("Piła", "64"),
]
STREETS = _split(
    "Mickiewicza|Słowackiego|Kościuszki|Piłsudskiego|Żeromskiego|Konopnickiej|Sienkiewicza|Kopernika|"
    "Świętokrzyska|Długa|Krótka|Polna|Leśna|Ogrodowa|Łąkowa|Źródlana|Wiśniowa|Słoneczna|Szkolna|Kwiatowa|"
    "Lipowa|Brzozowa|Klonowa|Różana|Jana Pawła II|3 Maja|Grunwaldzka|Wojska Polskiego|Obrońców Westerplatte|"
    "Żwirki i Wigury|Chopina|Moniuszki|Reymonta|Prusa|Orzeszkowej|Batorego|Chrobrego|Mieszka I|Kraszewskiego",
    "|",
)
AVENUES = ["Jerozolimskie", "Niepodległości", "Solidarności", "Wojska Polskiego", "Grunwaldzka", "Zwycięstwa"]
DOMAINS = [
    ("gmail.com", 30),
    ("wp.pl", 14),
    ("onet.pl", 12),
    ("o2.pl", 9),
    ("interia.pl", 9),
    ("op.pl", 5),
    ("gazeta.pl", 3),
    ("poczta.fm", 2),
    ("tlen.pl", 2),
    ("outlook.com", 5),
    ("yahoo.com", 2),
    ("icloud.com", 2),
    ("protonmail.com", 1),
    ("firma.com.pl", 4),
]
MOBILE_PREFIXES = ["45", "50", "51", "53", "57", "60", "66", "69", "72", "73", "78", "79", "88"]
ASCII = str.maketrans("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ", "acelnoszzACELNOSZZ")
YES_CELLS = ["tak", "tak", "tak", "TAK", "Tak", "1", "x"]
NO_CELLS = ["nie", "nie", "NIE", "Nie", "0"]
EARLIEST = datetime(2018, 5, 25, 8, 0)  # the GDPR's first day
LATEST = datetime(2025, 12, 31, 20, 0)


@dataclass
class FileStats:
    path: Path
    rows: int
    bad_emails: int
    size: int
    seconds: float


def _female_surname(surname: str) -> str:
    for ending in ("ski", "cki", "dzki"):
        if surname.endswith(ending):
            return surname[:-1] + "a"
    return surname


def _email(rng: random.Random, first: str, last: str, used: set[str]) -> str:
    f, la = first.translate(ASCII).lower(), last.translate(ASCII).lower()
    pattern = rng.random()
    if pattern < 0.35:
        local = f"{f}.{la}"
    elif pattern < 0.55:
        local = f"{f}{la}{rng.randint(1, 99)}"
    elif pattern < 0.7:
        local = f"{f[0]}.{la}"
    elif pattern < 0.85:
        local = f"{la}.{f}{rng.randint(60, 99)}"
    else:
        local = f"{f}_{rng.randint(1, 9999)}"
    domains, weights = zip(*DOMAINS, strict=True)
    domain = rng.choices(domains, weights)[0]
    candidate = f"{local}@{domain}"
    suffix = 1
    while candidate in used:
        suffix += 1
        candidate = f"{local}{suffix}@{domain}"
    used.add(candidate)
    if rng.random() < 0.05:  # typed with a capital, as people do: the import lower-cases it
        candidate = candidate[0].upper() + candidate[1:]
    return candidate


def _phone(rng: random.Random, used: set[int]) -> str:
    while True:
        prefix = rng.choice(MOBILE_PREFIXES)
        rest = rng.randrange(10_000_000)
        number = int(prefix) * 10_000_000 + rest
        if number not in used:
            used.add(number)
            break
    digits = f"{number:09d}"
    a, b, c = digits[:3], digits[3:6], digits[6:]
    style = rng.random()
    if style < 0.4:
        return f"+48 {a} {b} {c}"
    if style < 0.75:
        return f"{a} {b} {c}"
    if style < 0.9:
        return digits
    return f"{a}-{b}-{c}"


def _moment(rng: random.Random) -> datetime:
    span = int((LATEST - EARLIEST).total_seconds())
    return EARLIEST + timedelta(seconds=rng.randrange(span))


def _consent(rng: random.Random, yes: float, no: float, dated: float) -> str:
    roll = rng.random()
    if roll < yes:
        return rng.choice(YES_CELLS)
    if roll < yes + no:
        return rng.choice(NO_CELLS)
    if roll < yes + no + dated:
        moment = _moment(rng)
        return moment.strftime("%Y-%m-%d") if rng.random() < 0.5 else moment.strftime("%d.%m.%Y")
    return ""


def generate_file(path: Path, rows: int, seed: int = SEED) -> FileStats:
    """Write the benchmark CSV; the first K rows are the same for every N with the same seed."""
    started = time.perf_counter()
    rng = random.Random(seed)
    emails: set[str] = set()
    phones: set[int] = set()
    bad = 0
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=";", lineterminator="\r\n")
        writer.writerow(HEADERS)
        for number in range(rows):
            female = rng.random() < 0.52
            first = rng.choice(FEMALE if female else MALE)
            surname = rng.choice(SURNAMES_GENDERED)
            last = _female_surname(surname) if female else surname
            email = _email(rng, first, last, emails)
            if rng.random() < 0.001:  # a typo the import must reject: no dot in the domain
                email = email.split("@")[0] + "@" + email.split("@")[1].split(".")[0]
                bad += 1
            phone = _phone(rng, phones) if rng.random() < 0.8 else ""
            city, postal = rng.choice(CITIES)
            if rng.random() < 0.1:
                street = f"al. {rng.choice(AVENUES)} {rng.randint(1, 250)}"
            else:
                street = f"ul. {rng.choice(STREETS)} {rng.randint(1, 180)}"
            if rng.random() < 0.45:
                street += f"/{rng.randint(1, 60)}"
            consent_time = ""
            if rng.random() < 0.85:
                moment = _moment(rng)
                consent_time = (
                    moment.strftime("%d.%m.%Y %H:%M") if rng.random() < 0.6 else moment.strftime("%Y-%m-%d %H:%M:%S")
                )
            writer.writerow(
                [
                    f"K{1_000_000 + number:08d}",
                    first,
                    last,
                    email,
                    phone,
                    street,
                    f"{postal}-{rng.randint(1, 999):03d}",
                    city,
                    _consent(rng, 0.45, 0.15, 0.15),
                    _consent(rng, 0.30, 0.20, 0.10),
                    _consent(rng, 0.25, 0.25, 0.05),
                    consent_time,
                ]
            )
    return FileStats(path, rows, bad, path.stat().st_size, time.perf_counter() - started)


# --- databases ---------------------------------------------------------------------------------


def setup_workspace(url: str) -> tuple[int, int]:
    """A workspace and a source, made through the services; their ids."""
    database = Database.from_url(url)
    try:
        with database.transaction() as session:
            bind_scope(session, workspace_id=None, actor=Actor.system("benchmark"))
            workspace_id = accounts.create_workspace(session, slug="sklep", name="Sklep internetowy").id
        with database.transaction() as session:
            bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
            source_id = sources.create_source(session, name="Sklep internetowy", kind="shop").id
            assert {"email_marketing", "sms_marketing", "profiling"} <= {p.key for p in purposes.list_purposes(session)}
    finally:
        database.engine.dispose()
    return workspace_id, source_id


def baseline(url: str, csv_path: Path) -> float:
    """Seconds to load the file into a plain table with the same columns, in one transaction."""
    columns = ", ".join(f"{name} TEXT" for name in BASELINE_COLUMNS)
    database = Database.from_url(url)
    try:
        with database.engine.begin() as connection:
            connection.execute(text(f"CREATE TABLE baseline_contacts ({columns})"))
        if database.engine.dialect.name == "postgresql":
            started = time.perf_counter()
            with database.engine.begin() as connection:
                cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
                statement = (
                    f"COPY baseline_contacts ({', '.join(BASELINE_COLUMNS)}) FROM STDIN "
                    "WITH (FORMAT csv, DELIMITER ';', HEADER true, ENCODING 'UTF8')"
                )
                with cursor.copy(statement) as copy, csv_path.open("rb") as handle:
                    while chunk := handle.read(1024 * 1024):
                        copy.write(chunk)
            seconds = time.perf_counter() - started
        else:
            placeholders = ", ".join("?" for _ in BASELINE_COLUMNS)
            started = time.perf_counter()
            with database.engine.begin() as connection, csv_path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle, delimiter=";")
                next(reader)
                cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
                cursor.executemany(f"INSERT INTO baseline_contacts VALUES ({placeholders})", reader)
            seconds = time.perf_counter() - started
        with database.engine.connect() as connection:
            loaded = connection.execute(text("SELECT count(*) FROM baseline_contacts")).scalar_one()
        assert loaded > 0
    finally:
        database.engine.dispose()
    return seconds


# --- the import, in a child process -------------------------------------------------------------


def _vm_hwm_mb() -> float:
    with Path("/proc/self/status").open() as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """What ``zgoda import FILE --workspace W --source S --mapping M`` does, timed; returns the figures."""
    from zgoda.contacts.imports import service as imports
    from zgoda.contacts.imports.mapping import auto_map
    from zgoda.contacts.imports.models import ImportJob

    samples: list[tuple[int, float]] = []
    database = Database.from_url(spec["url"])
    backends = _Backends(database)
    spent, spent_cpu = _time_the_steps(imports, backends)
    with database.engine.connect():
        pass  # the driver loaded too
    hwm_start = _vm_hwm_mb()
    started = time.perf_counter()
    cpu_started = time.process_time()
    with database.transaction() as session:
        bind_scope(session, workspace_id=spec["workspace_id"], actor=Actor(label="cli:benchmark", via="cli"))
        staged = imports.stage_path(Path(spec["file"]), data_dir=Path(spec["data_dir"]))
        keys = {p.key for p in purposes.list_purposes(session)}
        mapping, _ = auto_map(HEADERS, keys)
        mapping.attributes = dict(ATTRIBUTES)
        planned = imports.create_job(session, source_id=spec["source_id"], staged=staged, mapping=mapping)
        job_id = planned.job.id
        mapped = planned.mapped
    staged_seconds = time.perf_counter() - started
    next_sample = [max(1, spec["rows"] // 10)]

    def progress(job: ImportJob) -> None:
        if job.counts["rows_read"] >= next_sample[0]:
            samples.append((job.counts["rows_read"], _vm_hwm_mb()))
            next_sample[0] += max(1, spec["rows"] // 10)

    batch = {"batch_size": spec["batch"]} if spec.get("batch") else {}  # else run_job's default
    job = imports.run_job(database, job_id, region="PL", on_progress=progress, **batch)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    server_cpu = backends.cpu_seconds()
    database.engine.dispose()
    return {
        "seconds": seconds,
        "staged_seconds": staged_seconds,
        "status": job.status,
        "error": job.error,
        "counts": job.counts,
        "mapped": mapped,
        "hwm_samples": samples,
        "steps": spent,
        "steps_cpu": spent_cpu,
        "batch_size": spec.get("batch") or imports.BATCH_SIZE,
        "hwm_end_mb": _vm_hwm_mb(),
        "hwm_start_mb": hwm_start,
        "cpu_seconds": cpu_seconds,
        "server_cpu_seconds": server_cpu,
    }


class _Backends:
    """The PostgreSQL backends serving this process's connections, and their CPU time from ``/proc`` (a
    server on this machine only; ``None`` otherwise). Each connection is opened by this process, so a
    backend's CPU time is all this import's."""

    def __init__(self, database: Database) -> None:
        self.pids: list[int] = []
        self.clock_tick = os.sysconf("SC_CLK_TCK")
        if database.engine.dialect.name == "postgresql":
            event.listen(database.engine, "connect", self._connected)

    def _connected(self, dbapi_connection: Any, _record: Any) -> None:
        self.pids.append(dbapi_connection.info.backend_pid)

    def cpu_seconds(self) -> float | None:
        if not self.pids:
            return None
        total = 0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None  # the server runs elsewhere (or the backend ended)
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / self.clock_tick


STEPS = {
    "_parse_row": "read + validate rows (_parse_row)",
    "_Directory.load": "find existing contacts (IN queries)",
    "_Directory.write": "write contacts and identities",
    "_consent_events": "decide consent events",
    "record_events": "ledger.record_events",
    "_refresh_statistics": "ANALYZE (PostgreSQL)",
}
# inside ledger.record_events (timed when the ledger has them; not added to the total). On PostgreSQL a
# large batch writes on a helper thread: a step's time is this thread's, waiting for the writes included.
LEDGER_STEPS = {
    "_event_rows": "event and evidence rows",
    "_insert_events": "hash chain + insert events",
    "_materialise": "state table",
}


PER_ROW_STEPS = {"_parse_row"}  # called once a row: the server's CPU is not read around them (too costly)


def _time_the_steps(imports: Any, backends: _Backends) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Wrap the import's steps to add up their time: where the seconds go. Per step: wall seconds, and
    CPU seconds of this process and of its PostgreSQL backends (the machine is shared: the wall time
    includes waiting for a CPU). A few microseconds a call; ``/proc`` is read only around batch steps."""
    from zgoda.consent import ledger

    spent = dict.fromkeys([*STEPS, *LEDGER_STEPS], 0.0)
    spent_cpu = {name: [0.0, 0.0] for name in spent}
    for name in spent:
        owner: Any = ledger if name == "record_events" or name in LEDGER_STEPS else imports
        attribute = name
        if name.startswith("_Directory."):
            owner, attribute = getattr(imports, "_Directory", None), name.removeprefix("_Directory.")
        if owner is None or not hasattr(owner, attribute):
            continue  # an import without this step (the row-by-row one)
        original = getattr(owner, attribute)  # for a classmethod: bound to the class, so calls pass through

        def timed(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            server = backends.cpu_seconds() if _name not in PER_ROW_STEPS else None
            cpu = time.process_time()
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - started
                spent_cpu[_name][0] += time.process_time() - cpu
                if server is not None:
                    spent_cpu[_name][1] += (backends.cpu_seconds() or server) - server

        setattr(owner, attribute, timed)
    return spent, spent_cpu


def run_child(spec: dict[str, Any], profile_to: Path | None) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter and return its result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    if profile_to is not None:
        command[1:1] = ["-m", "cProfile", "-o", str(profile_to)]
    completed = subprocess.run(command, stdout=subprocess.PIPE, check=True)
    result: dict[str, Any] = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    return result


# --- one database, one size ----------------------------------------------------------------------


@dataclass
class Figures:
    database: str
    rows: int
    baseline_seconds: float = 0.0
    import_seconds: float = 0.0
    staged_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    start_rss_mb: float = 0.0
    hwm_samples: list[tuple[int, float]] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)
    steps_cpu: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    contacts: int = 0
    events: int = 0
    ok: bool = False
    problem: str | None = None
    profile: str | None = None
    cpu_seconds: float = 0.0
    server_cpu_seconds: float | None = None
    batch_size: int = 0

    @property
    def ratio(self) -> float:
        return self.import_seconds / self.baseline_seconds if self.baseline_seconds else float("inf")


def measure(
    database_name: str, url: str, file: FileStats, work: Path, profile: bool, args_batch: int | None = None
) -> Figures:
    figures = Figures(database=database_name, rows=file.rows)
    upgrade(url)
    workspace_id, source_id = setup_workspace(url)
    figures.baseline_seconds = baseline(url, file.path)
    data_dir = work / f"data-{database_name}-{file.rows}"
    spec = {
        "url": url,
        "workspace_id": workspace_id,
        "source_id": source_id,
        "file": str(file.path),
        "data_dir": str(data_dir),
        "rows": file.rows,
        "batch": args_batch,
    }
    profile_to = work / f"profile-{database_name}-{file.rows}.out" if profile else None
    result = run_child(spec, profile_to)
    figures.peak_rss_mb = result["hwm_end_mb"]
    figures.start_rss_mb = result["hwm_start_mb"]
    figures.cpu_seconds = result["cpu_seconds"]
    figures.batch_size = result["batch_size"]
    figures.server_cpu_seconds = result["server_cpu_seconds"]
    shutil.rmtree(data_dir, ignore_errors=True)
    figures.import_seconds = result["seconds"]
    figures.staged_seconds = result["staged_seconds"]
    figures.hwm_samples = [(int(r), float(mb)) for r, mb in result["hwm_samples"]]
    figures.counts = result["counts"]
    figures.steps = {name: float(seconds) for name, seconds in result["steps"].items()}
    figures.steps_cpu = {name: [float(v) for v in pair] for name, pair in result["steps_cpu"].items()}
    database = Database.from_url(url)
    try:
        with database.transaction() as session:
            bind_scope(session, workspace_id=workspace_id, actor=Actor.system("benchmark"))
            figures.contacts = session.scalar(select(func.count(Contact.id))) or 0
            figures.events = session.scalar(select(func.count(ConsentEvent.id))) or 0
    finally:
        database.engine.dispose()
    expected = file.rows - file.bad_emails
    checks = [
        (result["status"] == "done", f"the job ended {result['status']}: {result['error']}"),
        (figures.counts.get("rows_read") == file.rows, "not every row was read"),
        (figures.counts.get("rows_rejected") == file.bad_emails, "unexpected rejections"),
        (figures.counts.get("contacts_created") == expected == figures.contacts, "contacts missing"),
    ]
    figures.problem = next((message for passed, message in checks if not passed), None)
    figures.ok = figures.problem is None
    if profile_to is not None:
        out = io.StringIO()
        pstats.Stats(str(profile_to), stream=out).sort_stats("cumulative").print_stats(40)
        pstats.Stats(str(profile_to), stream=out).sort_stats("tottime").print_stats(30)
        # what run_job and a batch spend outside the timed steps
        pstats.Stats(str(profile_to), stream=out).sort_stats("cumulative").print_callees(r"run_job|_process_batch")
        figures.profile = out.getvalue()
    return figures


def run_database(database_name: str, args: argparse.Namespace, files: list[FileStats], work: Path) -> list[Figures]:
    results: list[Figures] = []
    for file in files:
        print(f"  {database_name}: {file.rows:,} rows ...", file=sys.stderr, flush=True)
        profile = args.profile and file is files[-1]
        if database_name == "sqlite":
            directory = work / f"sqlite-{file.rows}"
            directory.mkdir()
            try:
                results.append(
                    measure("sqlite", f"sqlite:///{directory / 'bench.db'}", file, work, profile, args.batch)
                )
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        else:
            name, url = create_pg_database(args.pg_url)
            try:
                results.append(measure("postgresql", url, file, work, profile, args.batch))
            finally:
                drop_pg_database(args.pg_url, name)
    return results


# --- the report --------------------------------------------------------------------------------


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


def report(all_figures: list[Figures], files: list[FileStats]) -> None:
    print()
    print(f"Python {platform.python_version()} on {platform.machine()}, {_cpus()} CPUs, {_memory_gb():.0f} GB")
    print(f"load average (1 min) at the start {LOAD_AT_START:.2f}, at the end {os.getloadavg()[0]:.2f}")
    for file in files:
        print(
            f"file: {file.rows:,} rows, {file.size / 1e6:,.1f} MB, {file.bad_emails:,} malformed emails "
            f"(generated in {file.seconds:.1f} s)"
        )
    header = (
        f"{'database':<11} {'step':<34} {'rows':>10} {'seconds':>9} {'rows/s':>9} {'peak RSS MB':>12} "
        f"{'ratio':>7}  goal"
    )
    print(header)
    print("-" * (len(header) + 30))
    for f in all_figures:
        base = "COPY FROM STDIN" if f.database == "postgresql" else "executemany, 1 transaction"
        print(f"{f.database:<11} {'baseline: ' + base:<34} {f.rows:>10,} {f.baseline_seconds:>9.2f} "
              f"{rate(f.rows, f.baseline_seconds):>9} {'':>12} {'1.00':>7}")  # fmt: skip
        rss_met = f.peak_rss_mb < RSS_GOAL_MB
        if f.database == "postgresql":
            ratio_met = f.ratio <= RATIO_GOAL
            goal = (
                f"time <= {RATIO_GOAL:.0f}x: {'MET' if ratio_met else 'NOT MET'}; "
                f"RSS < {RSS_GOAL_MB:.0f} MB: {'MET' if rss_met else 'NOT MET'}"
            )
        else:
            goal = f"(time goal is on PostgreSQL); RSS < {RSS_GOAL_MB:.0f} MB: {'MET' if rss_met else 'NOT MET'}"
        label = f"import: zgoda import ({f.batch_size:,}/batch)"
        print(f"{f.database:<11} {label:<34} {f.rows:>10,} {f.import_seconds:>9.2f} "
              f"{rate(f.rows, f.import_seconds):>9} {f.peak_rss_mb:>12.1f} {f.ratio:>7.2f}  {goal}")  # fmt: skip
        c = f.counts
        print(
            f"{'':<11}   created {c.get('contacts_created', 0):,}, rejected {c.get('rows_rejected', 0):,}, "
            f"consents granted {c.get('consents_granted', 0):,} / withdrawn {c.get('consents_withdrawn', 0):,} / "
            f"left {c.get('consents_left', 0):,} / unknown basis {c.get('consents_unknown_basis', 0):,}; "
            f"{f.events:,} ledger events; staging + create_job {f.staged_seconds:.2f} s; "
            f"{'ok' if f.ok else 'FAILED: ' + (f.problem or '')}"
        )
        if f.steps and f.import_seconds:
            _print_steps(f)
        if f.hwm_samples:
            samples = ", ".join(f"{rows:,}: {mb:.0f}" for rows, mb in f.hwm_samples)
            print(f"{'':<11}   VmHWM (MB) before the import {f.start_rss_mb:.0f}; after rows {samples}")
    print()
    print("Peak RSS by file size (memory must not grow with the file):")
    for name in dict.fromkeys(f.database for f in all_figures):
        mine = [f for f in all_figures if f.database == name]
        sizes = "; ".join(f"{f.rows:,} rows: {f.peak_rss_mb:.1f} MB" for f in mine)
        growth = mine[-1].peak_rss_mb - mine[0].peak_rss_mb if len(mine) > 1 else 0.0
        print(f"  {name:<11} {sizes}  (difference {growth:+.1f} MB)")
    for f in all_figures:
        if f.profile:
            print(f"\n=== profile: {f.database}, {f.rows:,} rows (cProfile; times inflated) ===\n{f.profile}")


def _print_steps(f: Figures) -> None:
    """Where the time goes: wall seconds per step, and the CPU seconds of the import and of its backends."""
    server = f.server_cpu_seconds is not None
    pad = " " * 14
    print(f"{pad}{'where the time goes':<44} {'wall s':>8} {'share':>6} {'CPU s':>7} {'server CPU s':>13}")
    names = [n for n in STEPS if f.steps.get(n) and not (n == "_refresh_statistics" and f.database == "sqlite")]
    totals = [0.0, 0.0, 0.0]

    def line(label: str, wall: float, cpu: float, server_cpu: float | None) -> None:
        shown = f"{server_cpu:>13.1f}" if server and server_cpu is not None else f"{'':>13}"
        print(f"{pad}{label:<44} {wall:>8.1f} {wall / f.import_seconds:>6.0%} {cpu:>7.1f} {shown}")

    for name in names:
        cpu, server_cpu = f.steps_cpu.get(name, [0.0, 0.0])
        totals = [totals[0] + f.steps[name], totals[1] + cpu, totals[2] + server_cpu]
        line(STEPS[name], f.steps[name], cpu, None if name in PER_ROW_STEPS else server_cpu)
        if name == "record_events":
            inside = [n for n in LEDGER_STEPS if f.steps.get(n)]
            for sub in inside:
                sub_cpu, sub_server = f.steps_cpu.get(sub, [0.0, 0.0])
                line("  " + LEDGER_STEPS[sub], f.steps[sub], sub_cpu, sub_server)
            if inside:
                line(
                    "  validation, evidence, the rest",
                    f.steps[name] - sum(f.steps[n] for n in inside),
                    cpu - sum(f.steps_cpu[n][0] for n in inside),
                    server_cpu - sum(f.steps_cpu[n][1] for n in inside),
                )
    line(
        "the rest (staging, job, commits, ...)",
        f.import_seconds - totals[0],
        f.cpu_seconds - totals[1],
        f.server_cpu_seconds - totals[2] if f.server_cpu_seconds is not None else None,
    )
    line("total", f.import_seconds, f.cpu_seconds, f.server_cpu_seconds)
    waiting = f.import_seconds - f.cpu_seconds - (f.server_cpu_seconds or 0.0)
    print(
        f"{pad}wall time not spent on CPU by the import or its backends (waiting for a CPU, the disk, the "
        f"network): {waiting:.1f} s ({waiting / f.import_seconds:.0%})"
    )


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--keep-file", action="store_true", help="keep the generated CSV and print where it is")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL server where CREATE DATABASE works")
    parser.add_argument("--profile", action="store_true", help="run the N-row import under cProfile and print it")
    parser.add_argument("--batch", type=int, help="rows per batch (default: the import's own, BATCH_SIZE)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    work = Path(tempfile.mkdtemp(prefix="zgoda-import-bench-"))
    results: list[Figures] = []
    files: list[FileStats] = []
    try:
        sizes = [max(1, args.rows // 10), args.rows] if args.rows >= 10 else [args.rows]
        for rows in sizes:
            print(f"generating {rows:,} rows ...", file=sys.stderr, flush=True)
            files.append(generate_file(work / f"kontakty-{rows}.csv", rows, args.seed))
        if args.database in ("sqlite", "both"):
            results += run_database("sqlite", args, files, work)
        if args.database in ("postgresql", "both"):
            results += run_database("postgresql", args, files, work)
        report(results, files)
        if args.keep_file:
            kept = Path.cwd() / files[-1].path.name
            shutil.move(files[-1].path, kept)
            print(f"\nThe {files[-1].rows:,}-row file is kept at {kept}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(f.ok for f in results) else 1


if __name__ == "__main__":
    sys.exit(main())
