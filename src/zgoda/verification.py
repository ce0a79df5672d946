"""``zgoda verify``: every tamper-evident structure, checked in one pass."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from zgoda.accounts.models import Workspace
from zgoda.audit import service as audit
from zgoda.consent import verify as consent_verify
from zgoda.core.chain import ChainReport


@dataclass(frozen=True)
class CheckResult:
    check: str  # "audit", "platform_audit", later "ledger", "consent_state"
    scope: str  # workspace slug or "platform"
    entries: int
    head: str
    ok: bool
    problem: str | None = None
    first_bad_seq: int | None = None
    first_bad_id: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _from_report(report: ChainReport, slugs: dict[int, str]) -> CheckResult:
    scope = "platform" if report.chain_key is None else slugs.get(report.chain_key, f"#{report.chain_key}")
    problem = report.problem
    return CheckResult(
        check=report.chain,
        scope=scope,
        entries=report.entries,
        head=report.head_hash,
        ok=problem is None,
        problem=problem.reason if problem else None,
        first_bad_seq=problem.seq if problem else None,
        first_bad_id=problem.entry_id if problem else None,
    )


def verify_everything(session: Session, *, audit_only: bool = False, ledger_only: bool = False) -> list[CheckResult]:
    """Audit chains (per workspace and the platform's), consent ledger chains, and consent state vs replay."""
    slugs = {row.id: row.slug for row in session.execute(select(Workspace.id, Workspace.slug))}
    results: list[CheckResult] = []
    if not ledger_only:
        results += [_from_report(report, slugs) for report in audit.verify_all(session)]
    if not audit_only:
        results += [_from_report(report, slugs) for report in consent_verify.verify_ledger_chains(session)]
        for workspace_id, (count, mismatch) in sorted(consent_verify.verify_states(session).items()):
            problem = None
            if mismatch is not None:
                problem = (f"consent state of contact {mismatch.contact_id} for purpose {mismatch.purpose_id}: "
                           f"table says {mismatch.stored}, the ledger replays to {mismatch.replayed}")  # fmt: skip
            results.append(CheckResult(check="consent_state", scope=slugs.get(workspace_id, f"#{workspace_id}"),
                                       entries=count, head="", ok=mismatch is None, problem=problem))  # fmt: skip
    return results
