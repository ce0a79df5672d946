"""Browser end-to-end fixtures: the real ``zgoda serve --demo`` in a subprocess, driven by Debian's chromium.

The server runs on a fresh database of the suite's backend (a SQLite file, or a new PostgreSQL
database when ``ZGODA_TEST_DATABASE_URL`` points at PostgreSQL), so nothing here touches the
rolled-back test transactions of the other suites.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.support.databases import (
    current_backend,
    drop_postgres_database,
    new_database,
    pg_admin_url,
    skip_or_fail,
)
from zgoda.core.migrate import upgrade

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_SECRET = "e2e-secret-key-not-for-production-0123456789"  # a throwaway test key
STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
PAGE_TIMEOUT_MS = 15_000

# base URL -> the file holding that server's stdout and stderr, for failure reports
_SERVER_LOGS: dict[str, Path] = {}

# urllib without any proxy from the environment: the server is on the loopback interface
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_output(log_path: Path) -> str:
    try:
        return log_path.read_text(errors="replace")
    except OSError as error:
        return f"(the server log {log_path} cannot be read: {error})"


def _health_status(base_url: str) -> int | None:
    """The status of GET /health, or ``None`` while nothing answers."""
    try:
        with _DIRECT.open(f"{base_url}/health", timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:  # connection refused or reset, timeout: not listening yet
        return None


def _wait_until_healthy(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    last: int | None = None
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            pytest.fail(
                f"`zgoda serve` exited with code {code} before answering /health. Its output:\n"
                f"{_server_output(log_path)}",
                pytrace=False,
            )
        last = _health_status(base_url)
        if last == 200:
            return
        time.sleep(0.2)
    pytest.fail(
        f"`zgoda serve` did not answer GET {base_url}/health with 200 within {STARTUP_TIMEOUT_SECONDS:.0f} s "
        f"(last answer: {last}). Its output:\n{_server_output(log_path)}",
        pytrace=False,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _server_environment(data_dir: Path, database_url: str, base_url: str) -> dict[str, str]:
    # Nothing from the caller's ZGODA_* settings (a config file, SMTP, a broker) reaches the server.
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZGODA_")}
    env.update(
        {
            "ZGODA_DATA_DIR": str(data_dir),
            "ZGODA_DATABASE_URL": database_url,
            "ZGODA_SECRET_KEY": SERVER_SECRET,
            "ZGODA_BASE_URL": base_url,
            "ZGODA_SMTP_PORT": str(_free_port()),  # the demo's SMTP sink, never a port another run holds
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``zgoda serve --demo`` on a free port and a fresh database; yields its base URL."""
    tmp_dir = tmp_path_factory.mktemp("e2e-server")
    data_dir = tmp_dir / "data"
    backend = current_backend()
    database_url = new_database(backend, tmp_dir)
    try:
        if backend == "postgresql":
            upgrade(database_url)  # serve migrates SQLite itself, but refuses a PostgreSQL schema behind
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = tmp_dir / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "zgoda", "serve", "--demo", "--host", "127.0.0.1", "--port", str(port)],
                cwd=tmp_dir,
                env=_server_environment(data_dir, database_url, base_url),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _SERVER_LOGS[base_url] = log_path
        try:
            _wait_until_healthy(process, base_url, log_path)
            yield base_url
        finally:
            _stop(process)
            _SERVER_LOGS.pop(base_url, None)
    finally:
        if backend == "postgresql":
            drop_postgres_database(pg_admin_url(), database_url)


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        skip_or_fail("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """Headless Debian chromium, shared by the session; every test gets its own context."""
    browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser, live_server: str) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) whose relative URLs resolve against the live server."""
    context = browser.new_context(base_url=live_server)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    context.set_default_navigation_timeout(PAGE_TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed browser test shows what the server printed."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        base_url = funcargs.get("live_server")
        log_path = _SERVER_LOGS.get(base_url) if isinstance(base_url, str) else None
        if log_path is not None:
            report.sections.append((f"zgoda serve output ({log_path})", _server_output(log_path)))
    return report
