"""The template as SAM would deploy it: transformed offline by aws-sam-translator."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return dict(yaml_parse((REPO / "template.yaml").read_text()))


@pytest.fixture(scope="session")
def translated(template: dict[str, Any], monkeypatch_session: pytest.MonkeyPatch) -> dict[str, Any]:
    """CloudFormation after the SAM transform, with local paths replaced by S3 URIs as `sam package` does."""
    packaged = copy.deepcopy(template)
    for logical_id, resource in packaged["Resources"].items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://artifacts/{logical_id}"

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    monkeypatch_session.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return dict(json.loads(json.dumps(transform(packaged, {}, NoManagedPolicies()))))


@pytest.fixture(scope="session")
def monkeypatch_session():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="session")
def export_asl() -> dict[str, Any]:
    return dict(json.loads((REPO / "statemachine" / "export_billing.asl.json").read_text()))


def resources_of_type(translated: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in translated["Resources"].items() if r["Type"] == kind}
