"""Settings are read from the environment at call time and name the variable that is wrong."""

import pytest
from soracharge.errors import ConfigurationError
from soracharge.settings import SoracomSettings, StorageSettings, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in (
        "SORACOM_ENDPOINT",
        "SORACOM_COVERAGE_TYPE",
        "SORACOM_AUTH_KEY_ID",
        "SORACOM_AUTH_KEY",
        "SORACOM_AUTH_SECRET_ID",
        "SORACHARGE_BUCKET",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("coverage", "url"), [("jp", "https://api.soracom.io"), ("g", "https://g.api.soracom.io")])
def test_the_coverage_type_selects_the_endpoint(monkeypatch, coverage, url):
    monkeypatch.setenv("SORACOM_COVERAGE_TYPE", coverage)
    monkeypatch.setenv("SORACOM_AUTH_SECRET_ID", "soracom-auth")
    settings = load_settings(SoracomSettings)
    assert settings.coverages == (coverage,)
    assert settings.base_url(coverage) == url


def test_japan_coverage_is_the_default(monkeypatch):
    monkeypatch.setenv("SORACOM_AUTH_SECRET_ID", "soracom-auth")
    settings = load_settings(SoracomSettings)
    assert settings.coverages == ("jp",)
    assert settings.base_url("jp") == "https://api.soracom.io"


@pytest.mark.parametrize("value", ["jp,g", "g,jp", " G , jp ", "jp,g,jp"])
def test_a_stack_of_both_coverages_reaches_each_on_its_own_host(monkeypatch, value):
    monkeypatch.setenv("SORACOM_COVERAGE_TYPE", value)
    monkeypatch.setenv("SORACOM_AUTH_SECRET_ID", "soracom-auth")
    settings = load_settings(SoracomSettings)
    assert settings.coverages == ("jp", "g")
    assert settings.soracom_coverage_type == "jp,g"
    assert (settings.base_url("jp"), settings.base_url("g")) == ("https://api.soracom.io", "https://g.api.soracom.io")


def test_each_coverage_may_have_its_own_endpoint_which_wins_over_the_shared_one(monkeypatch):
    monkeypatch.setenv("SORACOM_COVERAGE_TYPE", "jp,g")
    monkeypatch.setenv("SORACOM_ENDPOINT", "http://127.0.0.1:8080")
    monkeypatch.setenv("SORACOM_ENDPOINT_G", "http://127.0.0.1:8082/v1")
    monkeypatch.setenv("SORACOM_AUTH_SECRET_ID", "soracom-auth")
    settings = load_settings(SoracomSettings)
    assert (settings.base_url("jp"), settings.base_url("g")) == ("http://127.0.0.1:8080", "http://127.0.0.1:8082")


@pytest.mark.parametrize("value", ["us", "jp;g", ",", "jp,eu"])
def test_an_unknown_coverage_is_named(monkeypatch, value):
    monkeypatch.setenv("SORACOM_COVERAGE_TYPE", value)
    monkeypatch.setenv("SORACOM_AUTH_SECRET_ID", "soracom-auth")
    with pytest.raises(ConfigurationError, match=r"SORACOM_COVERAGE_TYPE: .*coverage"):
        load_settings(SoracomSettings)


def test_a_coverage_endpoint_that_is_not_a_url_is_named(monkeypatch):
    monkeypatch.setenv("SORACOM_ENDPOINT_G", "g.api.soracom.io")
    monkeypatch.setenv("SORACOM_AUTH_SECRET_ID", "soracom-auth")
    with pytest.raises(
        ConfigurationError, match=r"SORACOM_ENDPOINT_G must be an http\(s\) URL, got 'g.api.soracom.io'"
    ):
        load_settings(SoracomSettings)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8080", "http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1"])
def test_soracom_endpoint_overrides_the_coverage_and_takes_the_base_without_v1(monkeypatch, endpoint):
    monkeypatch.setenv("SORACOM_COVERAGE_TYPE", "g")
    monkeypatch.setenv("SORACOM_ENDPOINT", endpoint)
    monkeypatch.setenv("SORACOM_AUTH_KEY_ID", "keyId-1")
    monkeypatch.setenv("SORACOM_AUTH_KEY", "secret-1")
    assert load_settings(SoracomSettings).base_url("g") == "http://127.0.0.1:8080"


def test_missing_credentials_name_every_way_to_give_them():
    with pytest.raises(
        ConfigurationError, match=r"SORACOM_AUTH_KEY_ID and SORACOM_AUTH_KEY, or SORACOM_AUTH_SECRET_ID"
    ):
        load_settings(SoracomSettings)


def test_an_unknown_coverage_type_names_the_variable(monkeypatch):
    monkeypatch.setenv("SORACOM_COVERAGE_TYPE", "eu")
    monkeypatch.setenv("SORACOM_AUTH_SECRET_ID", "soracom-auth")
    with pytest.raises(
        ConfigurationError,
        match=r"SORACOM_COVERAGE_TYPE: coverage must be 'jp' \(Japan, JPY\) or 'g' \(Global, USD or EUR\), got 'eu'",
    ):
        load_settings(SoracomSettings)


def test_the_auth_key_never_shows_in_the_settings_repr(monkeypatch):
    monkeypatch.setenv("SORACOM_AUTH_KEY_ID", "keyId-1")
    monkeypatch.setenv("SORACOM_AUTH_KEY", "secret-do-not-print")
    settings = load_settings(SoracomSettings)
    assert "secret-do-not-print" not in repr(settings)
    assert "secret-do-not-print" not in str(settings.model_dump())


def test_the_bucket_has_no_default(monkeypatch):
    with pytest.raises(ConfigurationError, match=r"SORACHARGE_BUCKET: Field required"):
        load_settings(StorageSettings)
    monkeypatch.setenv("SORACHARGE_BUCKET", "soracharge-data-123456789012")
    assert load_settings(StorageSettings).soracharge_bucket == "soracharge-data-123456789012"


def test_settings_are_read_at_call_time(monkeypatch):
    monkeypatch.setenv("SORACHARGE_BUCKET", "first-bucket")
    assert load_settings(StorageSettings).soracharge_bucket == "first-bucket"
    monkeypatch.setenv("SORACHARGE_BUCKET", "second-bucket")
    assert load_settings(StorageSettings).soracharge_bucket == "second-bucket"
