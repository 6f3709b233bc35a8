"""Fuzz: any JSON value into ``parse_input`` gives the model or an InvalidInputError, for every handler's input."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import S3Model
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from soracharge.errors import InvalidInputError
from soracharge.models.export_flow import (
    ExportProgress,
    ExportRequest,
    Payload,
    StartExportRequest,
    StoreExportRequest,
)
from soracharge.models.imports import IMPORTABLE_KEY, FollowSessionRequest, ObjectRef, SessionProgress
from soracharge.models.months import _YEAR_MONTH
from soracharge.models.parsing import parse_input

from tests.fuzz.strategies import JSON_VALUES, TEXT, fuzz, mutated, raises_exactly

EVENTS = Path(__file__).resolve().parents[2] / "events"

#: Every handler's input model, and the sample events that are its input.
MODELS: dict[type[BaseModel], list[str]] = {
    ExportRequest: ["export_billing_manual.json", "export_billing_schedule.json", "get_bill.json"],
    StartExportRequest: ["start_export.json"],
    ExportProgress: ["poll_export.json"],
    StoreExportRequest: ["store_export.json"],
    SessionProgress: ["get_import_session.json"],
    FollowSessionRequest: ["follow_import_session.json", "finish_import.json"],
    S3Model: ["import_charges_s3_put.json"],
}
SAMPLES = [(model, name) for model, names in MODELS.items() for name in names]
MODEL_NAMES = [model.__name__ for model in MODELS]
#: Replacement values close to what the models expect, beside any JSON value.
NEAR_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(
        [
            "202610",
            "202613",
            "202600",
            "20261",
            "2026100",
            "２０２６１０",
            "202610\n",
            " 202610",
            "2026-11-04T00:00:00Z",
            "2026-11-04T00:00:00",
            "2026-11-04T00:00:00+09:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-02-30T00:00:00Z",
            "28734.56",
            "1E+2",
            "-0",
            "NaN",
            "sNaN",
            "Infinity",
            "JPY",
            "jpy",
            "GBP",
            "processing",
            "exported",
            "failed",
            "OPEN",
            "NEW",
            "REPORTED",
            -1,
            0,
            2**63,
            1.5,
            "uploads/202610/a+b.csv",
            "exports/202613/x.csv",
            "uploads/202610/.csv",
            "uploads/202610/a/b.csv",
            "uploads%2F202610%2Fx.csv",
            "uploads/202610/%E3%81%82.csv",
            "uploads/202610/%ZZ.csv",
            "%",
            "+",
        ]
    ),
)


def check(event: Any, model: type[BaseModel]) -> BaseModel | None:
    """Parse ``event`` as the handler does, then what the handler does next with it."""
    message = None
    try:
        parsed = parse_input(event, model)
    except InvalidInputError as exc:
        message = str(exc)
    if message is not None:
        assert model.__name__ in message, message
        return None
    assert isinstance(parsed, model)
    if isinstance(parsed, S3Model):
        for record in parsed.Records:
            try:
                ref = ObjectRef.from_s3_record(record)
            except InvalidInputError:
                continue
            try:
                source, month = ref.layout()
            except InvalidInputError:
                assert IMPORTABLE_KEY.fullmatch(ref.key) is None
                continue
            assert source in ("exports", "uploads")
            assert _YEAR_MONTH.fullmatch(month)
    if isinstance(parsed, Payload):
        # What a task Lambda returns re-parses to the same payload (Step Functions hands it on).
        event_out = parsed.to_event()
        json.dumps(event_out)
        assert parse_input(event_out, model) == parsed
    return parsed


@fuzz(120)
@given(event=JSON_VALUES, model=st.sampled_from(list(MODELS)))
def test_any_json_value_gives_the_model_or_invalid_input(event, model):
    check(event, model)


@pytest.mark.parametrize(("model", "sample"), SAMPLES, ids=[name for _, name in SAMPLES])
def test_mutated_sample_events_give_the_model_or_invalid_input(model, sample):
    original = json.loads((EVENTS / sample).read_text(encoding="utf-8"))
    assert check(original, model) is not None, "the sample event itself is valid"

    @fuzz(150)
    @given(event=mutated(original, NEAR_VALUES))
    def run(event: Any) -> None:
        check(event, model)

    run()


@fuzz(150)
@given(
    key=st.one_of(
        TEXT,
        st.builds(
            lambda source, month, name: f"{source}/{month}/{name}",
            st.sampled_from(["uploads", "exports", "upload", "Exports", "uploads/x"]),
            st.one_of(st.sampled_from(["202610", "202613", "000001", "99991"]), TEXT),
            st.one_of(TEXT, st.sampled_from(["a.csv", "a+b.csv", "%2F.csv", ".csv", "a.CSV", "a.csv/"])),
        ),
    ),
    bucket=TEXT,
    version=st.one_of(st.none(), TEXT),
)
def test_any_s3_key_gives_a_layout_or_invalid_input(key, bucket, version):
    event = json.loads((EVENTS / "import_charges_s3_put.json").read_text(encoding="utf-8"))
    event["Records"][0]["s3"]["object"].update({"key": key, "versionId": version})
    event["Records"][0]["s3"]["bucket"]["name"] = bucket
    check(event, S3Model)


@fuzz(150)
@given(
    scheduled_time=st.one_of(
        st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
        st.sampled_from(
            ["2026-11-04T00:00:00Z", "0001-01-31T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
        ),
    )
)
def test_scheduled_times_give_the_billed_month_or_invalid_input(scheduled_time):
    request = check({"scheduledTime": scheduled_time}, ExportRequest)
    if isinstance(request, ExportRequest):
        try:
            month = request.billing_month()
        except InvalidInputError:
            return
        assert _YEAR_MONTH.fullmatch(month), month


# -- regressions: bugs this fuzzing found (each raised something other than InvalidInputError at cb3dea5) --


@pytest.mark.parametrize(
    ("records", "failure"),
    [
        (["202610"], "AttributeError: 'str' object has no attribute 'get'"),
        ([{}], "AttributeError: 'NoneType' object has no attribute 'get'"),
        ([{"eventName": "ObjectCreated:Put", "s3": None}], "AttributeError: 'NoneType' object has no attribute 'get'"),
        (
            [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}],
            "AttributeError: 'NoneType' object has no attribute 'get'",
        ),
        (
            [{"eventName": None, "s3": {"object": {"key": "uploads/202610/a.csv"}}}],
            "TypeError: argument of type 'NoneType' is not iterable",
        ),
    ],
    ids=["record-not-an-object", "empty-record", "s3-null", "no-object", "eventName-null"],
)
def test_malformed_s3_records_give_invalid_input(records, failure):
    # Was: AttributeError/TypeError from Powertools' S3RecordModel validator, through parse_input.
    with raises_exactly(InvalidInputError, f"^invalid S3Model: {re.escape(failure)}$"):
        parse_input({"Records": records}, S3Model)


@pytest.mark.parametrize("scheduled_time", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_scheduled_time_at_the_ends_of_datetime_gives_invalid_input(scheduled_time):
    # Was: OverflowError from previous_month's astimezone(UTC), in ExportRequest.billing_month().
    moment = datetime.fromisoformat(scheduled_time)
    expected = f"invalid ExportRequest: input: scheduledTime {moment} has no month before it"
    with raises_exactly(InvalidInputError, f"^{re.escape(expected)}$"):
        parse_input({"scheduledTime": scheduled_time}, ExportRequest).billing_month()
