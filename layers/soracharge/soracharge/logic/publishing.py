"""What people read is a projection of the ledger: ``reports/`` shows the report the ledger names.

Every end of an import is recorded in the ledger with the key of its staged report (``ledger/reports/...``):
an attempt's end, a person's decision, CloudBlue's rating. The public report
(``reports/<yyyyMM>/<object-version>.json``, its page beside it) is only ever written with the report the
ledger names *at the time*, and the writer reads the ledger again after writing: if the ledger moved on
meanwhile (a later end recorded), it writes the newer one. So whatever the order in which slow writers
wake up, the last write is followed by a check that corrects it, and ``reports/`` ends equal to the ledger.
The ledger is also the alerts' outbox: an end whose report is not marked ``alerted`` is owed its alert,
and whoever publishes it (its writer, a late writer, a repair) sends it and marks it: an alert may be
sent twice, never lost. An alert about an older end can still be sent after a newer end was recorded, by
a writer that read the ledger just before (its text names its end; acting on it does no harm).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from soracharge.adapters.ledger import Ledger, LedgerEntry
from soracharge.adapters.notifier import Notifier
from soracharge.adapters.storage import ReportStore
from soracharge.errors import ImportInProgressError
from soracharge.logic import alerts, history
from soracharge.logic.report_html import render_report_html
from soracharge.models.imports import ImportReport, ObjectRef, report_key
from soracharge.observability import Metric, count, logger

#: Where the ends' reports are staged in the data bucket, before the ledger records them (never read by people).
STAGED_REPORTS = "ledger/reports/"
#: The months the history page shows (older reports stay in reports/, each with its page).
HISTORY_MONTHS = 24
#: Rounds a writer follows a ledger that keeps moving before it leaves the rest to the next end's writer.
ROUNDS = 3


def public_report_key(obj: ObjectRef) -> str:
    """``reports/<yyyyMM>/<object-version>.json``: where people (and the CLI) read an object's report."""
    _, month = obj.layout()
    return report_key(month, obj.version_id, obj.key)


def publish(
    obj: ObjectRef,
    store: ReportStore,
    ledger: Ledger,
    notifier: Notifier,
    *,
    alert: Callable[[ImportReport, str], alerts.Alert | None],
    after: Callable[[ImportReport, str], None] = lambda report, key: None,
) -> ImportReport:
    """Publish the report the ledger names for ``obj`` now, with the alert it owes; return it.

    The ledger is the outbox: an end whose report is not marked ``alerted`` is owed its alert, and whoever
    publishes it sends it, then marks it (an alert may so be sent twice, never lost). ``after`` runs once the
    report is public (the import starts the follow-session state machine for a CLOSED one).
    """
    key = public_report_key(obj)
    for _ in range(ROUNDS):
        entry = ledger.get(obj.object_id)
        staged_key = entry.report_key if entry is not None else None
        staged = store.get_json(staged_key) if staged_key else None
        if entry is None or staged_key is None or staged is None:
            raise ImportInProgressError(f"{obj.uri}: its end is not recorded with its report yet")
        report = ImportReport.model_validate(staged)
        if entry.alerted != staged_key:
            said = alert(report, key)
            if said is not None:
                alerts.publish(notifier, said)
            ledger.mark_alerted(obj.object_id, staged_key)
        save_report(store, key, report)
        after(report, key)
        again = ledger.get(obj.object_id)
        if again is not None and again.report_key == staged_key:
            return report
    raise ImportInProgressError(f"{obj.uri}: its end kept changing while it was published: the next one publishes")


def behind(obj: ObjectRef, store: ReportStore, entry: LedgerEntry) -> bool:
    """Whether what people read lags the ledger: the end's alert not sent yet, or ``reports/`` not showing the
    report the ledger names."""
    if not entry.report_key:
        return False
    if entry.alerted != entry.report_key:
        return True
    public = store.get_json(public_report_key(obj))
    return public is None or public != store.get_json(entry.report_key)


def save_report(store: ReportStore, key: str, report: ImportReport) -> None:
    """The page people read (``.html``), then the report's JSON at ``key``, written last: the record.

    The page is best effort: the JSON is the record, and a page that cannot be rendered or written
    must never fail an import whose session may be closed already (it is logged and counted).
    """
    page = key.removesuffix(".json") + ".html"
    try:
        store.put_text(page, render_report_html(report), "text/html; charset=utf-8")
    except Exception:  # noqa: BLE001 - presentation only: the JSON report below holds everything
        logger.exception("The HTML report was not written", extra={"reportKey": page})
        count(Metric.HTML_REPORTS_FAILED)
    store.put_json(key, report.to_event())
    write_history(store)


def write_history(store: ReportStore) -> None:
    """``reports/history.html``: every report of the last :data:`HISTORY_MONTHS` months in ``reports/``, on one
    page (best effort, as the page above). Its cost is bounded by those months' reports, whatever the
    bucket's age: one listing, then a read of each report shown."""
    try:
        keys = [k for k in store.keys("reports/") if k.endswith(".json") and k[8:14].isdigit()]
        shown = sorted({k[8:14] for k in keys})[-HISTORY_MONTHS:]
        found = []
        for key in keys:
            if key[8:14] in shown:
                document = store.get_json(key)
                with contextlib.suppress(ValueError):
                    found.append((ImportReport.model_validate(document), key.removeprefix("reports/")[:-5] + ".html"))
        store.put_text(history.HISTORY_KEY, history.render_history_html(found), "text/html; charset=utf-8")
    except Exception:  # noqa: BLE001 - presentation only: every report it lists is in reports/
        logger.exception("The history page was not written", extra={"reportKey": history.HISTORY_KEY})
        count(Metric.HTML_REPORTS_FAILED)
