"""The runbook's actions: what an alert tells a person to do, one word each.

Every alert names one (``Runbook action: <name>`` at its end), the runbook table (docs/operate/runbook.md) has one per
row, and the chaos harness (``tests/chaos/harness.py``) performs each exactly as the alert states it:
the three lists are one, and ``tests/template/test_runbook.py`` keeps them equal.
"""

from __future__ import annotations

from enum import StrEnum


class Remedy(StrEnum):
    """What to do about an alert (docs/operate/runbook.md, "When something goes wrong (runbook)")."""

    #: Fix the cause the alert names, then start the export again: the alert's ``start-execution`` command.
    START_EXPORT = "start-export"
    #: Fix the cause the alert names, then re-deliver the same S3 event: the alert's ``lambda invoke`` command.
    REDELIVER_EVENT = "redeliver-event"
    #: Fix the file or the mapping (each problem is listed), then upload the file again.
    UPLOAD_AGAIN = "upload-again"
    #: Fix the cause in CloudBlue (``errorDesc``), then upload the file again with ``import=additional``.
    UPLOAD_ADDITIONAL = "upload-additional"
    #: Import only the differences between what was imported and the right file, as an additional file.
    IMPORT_DIFFERENCES = "import-differences"
    #: Follow the CloudBlue session again: the alert's ``start-execution`` command.
    FOLLOW_AGAIN = "follow-again"
    #: Read the preview of a month held for approval, then approve or reject it: the alert's two commands.
    APPROVE = "approve"
    #: Nothing: the alert says why (no charge was sent twice, and none is missing).
    NOTHING = "nothing"


#: How an alert's message names its action (its last line).
RUNBOOK_LINE = "Runbook action: "
