"""Our models, endpoints and state machine checked against the reference documents in docs/apis/ (OpenAPI and
Arazzo), and those documents against the ones the project was researched from (../shared/reference)."""

from __future__ import annotations

import json
import typing
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from soracharge.models.soracom import AuthRequest, AuthResponse, ExportedFile, ExportStarted, MonthlyBill
from soracharge.settings import SORACOM_ENDPOINTS

REPO = Path(__file__).resolve().parents[2]
#: The reference documents as the repository ships them (docs/apis/index.md says where each comes from).
REFERENCE = REPO / "docs" / "apis"
#: Where they were researched from: beside the repository in CI and on the developers' machines.
RESEARCHED = REPO.parent / "shared" / "reference"
SHIPPED = (
    "arazzo/soracom-export-monthly-billing-workflow.yml",
    "openapi/soracom-auth-api-openapi.yml",
    "openapi/soracom-billing-api-openapi.yml",
    "openapi/soracom-harvest-api-openapi.yml",
    "charges-import-manager.aps-type.json",
    "charges-import-manager.md",
)


@cache
def openapi(name: str) -> dict[str, Any]:
    path = REFERENCE / "openapi" / f"soracom-{name}-api-openapi.yml"
    assert path.is_file(), f"{path} is missing from the repository"
    return dict(yaml.safe_load(path.read_text()))


def operation(name: str, path: str, method: str) -> dict[str, Any]:
    return dict(openapi(name)["paths"][path][method])


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_reference_documents_are_the_researched_ones(name: str) -> None:
    if not RESEARCHED.is_dir():
        pytest.skip(f"{RESEARCHED} is not beside this clone (CI has it): nothing to compare the copies with")
    assert (REFERENCE / name).read_bytes() == (RESEARCHED / name).read_bytes(), f"docs/apis/{name} differs"


def test_every_researched_reference_document_ships() -> None:
    if not RESEARCHED.is_dir():
        pytest.skip(f"{RESEARCHED} is not beside this clone (CI has it)")
    researched = {str(path.relative_to(RESEARCHED)) for path in RESEARCHED.rglob("*") if path.is_file()}
    assert researched - {"README.md"} == set(SHIPPED)  # its README is docs/apis/index.md, with the licences


CONTRACTS = [
    (MonthlyBill, "billing", "MonthlyBill"),
    (ExportStarted, "billing", "FileExportResponse"),
    (ExportedFile, "harvest", "GetExportedFileResponse"),
    (AuthRequest, "auth", "AuthRequest"),
    (AuthResponse, "auth", "AuthResponse"),
]


@pytest.mark.parametrize(("model", "api", "schema"), CONTRACTS, ids=[c[2] for c in CONTRACTS])
def test_every_model_field_is_a_property_of_its_openapi_schema(model: type[BaseModel], api: str, schema: str):
    properties = openapi(api)["components"]["schemas"][schema]["properties"]
    for name, field in model.model_fields.items():
        assert name in properties, f"{model.__name__}.{name} is not in {schema}"
        annotation = field.annotation
        candidates = [annotation] if typing.get_origin(annotation) is typing.Literal else typing.get_args(annotation)
        literal = [a for a in candidates if typing.get_origin(a) is typing.Literal]
        if "enum" in properties[name]:
            assert literal, f"{model.__name__}.{name} should be a Literal of {properties[name]['enum']}"
            assert set(typing.get_args(literal[0])) == set(properties[name]["enum"])


def test_the_openapi_examples_parse_into_our_models():
    bill = operation("billing", "/bills/{yyyyMM}", "get")["responses"]["200"]["content"]["application/json"]["example"]
    assert MonthlyBill.model_validate(bill).state == "closed"
    examples = operation("billing", "/bills/{yyyyMM}/export", "post")["responses"]["200"]["content"]["application/json"]
    assert ExportStarted.model_validate(examples["examples"]["(1) export_mode=async"]["value"]).exportedFileId
    exported = operation("harvest", "/files/exported/{exported_file_id}", "get")["responses"]["200"]
    assert ExportedFile.model_validate(exported["content"]["application/json"]["example"]).status == "exported"
    auth = openapi("auth")["components"]["schemas"]["AuthResponse"]["properties"]
    assert AuthResponse.model_validate({k: v["example"] for k, v in auth.items() if "example" in v}).apiKey


def test_the_token_lifetime_bounds_match_the_auth_request_schema():
    schema = openapi("auth")["components"]["schemas"]["AuthRequest"]["properties"]["tokenTimeoutSeconds"]
    metadata = AuthRequest.model_fields["tokenTimeoutSeconds"].metadata
    assert any(getattr(m, "le", None) == schema["maximum"] for m in metadata)


@pytest.mark.parametrize(
    ("api", "path", "method"),
    [
        ("auth", "/auth", "post"),
        ("billing", "/bills/{yyyyMM}", "get"),
        ("billing", "/bills/{yyyyMM}/export", "post"),
        ("harvest", "/files/exported/{exported_file_id}", "get"),
    ],
)
def test_the_client_calls_operations_that_exist(api, path, method):
    assert operation(api, path, method)["operationId"]


def test_the_export_is_asked_for_in_the_async_mode_the_api_offers():
    (mode,) = [
        p for p in operation("billing", "/bills/{yyyyMM}/export", "post")["parameters"] if p["name"] == "export_mode"
    ]
    assert "async" in mode["schema"]["enum"]


def test_both_coverage_endpoints_are_the_servers_of_the_api():
    servers = {server["url"] for server in openapi("billing")["servers"]}
    assert {f"{url}/v1" for url in SORACOM_ENDPOINTS.values()} == servers


def test_the_polling_loop_is_the_arazzo_workflows_retry_policy():
    workflow = yaml.safe_load((REFERENCE / "arazzo" / "soracom-export-monthly-billing-workflow.yml").read_text())
    (flow,) = workflow["workflows"]
    steps = {step["stepId"]: step for step in flow["steps"]}
    assert list(steps) == ["getBill", "startExport", "pollExport"]
    (retry,) = steps["pollExport"]["onFailure"]
    asl = json.loads((REPO / "statemachine" / "export_billing.asl.json").read_text())["States"]
    assert asl["WaitForExport"]["Seconds"] == retry["retryAfter"]
    (loop,) = [c for c in asl["IsExportReady"]["Choices"] if "And" in c]
    # retryLimit counts retries: the first poll plus retryLimit more.
    assert {"Variable": "$.export.polls", "NumericLessThan": retry["retryLimit"] + 1} in loop["And"]
    assert [p["value"] for p in steps["startExport"]["parameters"] if p["name"] == "export_mode"] == ["async"]
