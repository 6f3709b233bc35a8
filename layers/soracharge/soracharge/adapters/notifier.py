"""Alerts to the stack's SNS topic: the one place a person hears about a failure without reading logs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from soracharge.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient


class Notifier(Protocol):
    def publish(self, subject: str, message: str) -> None: ...


class SnsNotifier:
    def __init__(self, client: SNSClient, topic_arn: str) -> None:
        self._sns = client
        self._topic_arn = topic_arn

    def publish(self, subject: str, message: str) -> None:
        try:
            self._sns.publish(TopicArn=self._topic_arn, Subject=sns_subject(subject), Message=message)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot publish to {self._topic_arn}: {exc}") from exc


def sns_subject(subject: str) -> str:
    """What SNS accepts as a subject: printable ASCII, no line break, fewer than 100 characters."""
    ascii_only = subject.encode("ascii", errors="replace").decode("ascii")
    printable = "".join(c if c.isprintable() else " " for c in ascii_only).strip()
    return printable[:99] or "soracharge alert"
