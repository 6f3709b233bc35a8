"""The mapping file: the example loads, and every mistake is named with its file, line and field."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
import yaml
from soracharge.errors import MappingError
from soracharge.models.mapping import Mapping, _yaml_syntax_error, parse_mapping
from soracharge_local.simulators.soracom_data import _ITEMS, CUSTOMERS

from tests.unit.import_core.builders import (
    EXAMPLE_MAPPING,
    GLOBAL_EXAMPLE,
    MAPPING_YAML,
    RES_BASIC,
    SUB_DEFAULT,
    mapping,
)

GOOD = """\
customer:
  column: customer
  subscriptions:
    "Acme": {subscription: "9531985d-5d9d-49f8-9818-e811892f902b"}
items:
  - match: "Basic fee"
    resource: "90c192cf-d3ac-44af-8f21-ddb66cad4a26"
"""


def error_of(text: str | dict[str, Any]) -> str:
    with pytest.raises(MappingError) as raised:
        parse_mapping(text, "mapping.yaml")
    return str(raised.value)


def test_the_example_mapping_loads_with_its_documented_choices():
    example = parse_mapping(EXAMPLE_MAPPING.read_text(encoding="utf-8"), str(EXAMPLE_MAPPING))
    assert (example.currency, example.customer.column, example.charge_type) == ("JPY", "customer", "COS")
    assert (example.date_format, example.aggregation, example.packet_size) == ("date-time", "imsi-month", 500)


def _item_names(coverage: str) -> list[str]:
    """Every bill item name the simulator writes for a coverage."""
    items = _ITEMS[coverage]
    return [value if isinstance(value, str) else value[0] for value in vars(items).values()]


def test_the_example_mapping_maps_every_item_and_customer_of_the_jp_simulator():
    example = parse_mapping(EXAMPLE_MAPPING.read_text(encoding="utf-8"), str(EXAMPLE_MAPPING))
    names = _item_names("jp")
    assert all(example.item_for(name) is not None for name in names)
    resources = [example.item_for(name).resource for name in names]  # type: ignore[union-attr]
    # one resource per kind of thing billed: upload and download are one (data), the two basic fees one, the
    # camera's two licence items one
    assert len(set(resources)) == len(names) - 3
    assert all(value in example.customer.subscriptions for value in CUSTOMERS)
    assert example.customer_for("") == example.customer.default
    assert set(example.customer.devices.values()) <= set(CUSTOMERS)
    assert [rule.basis for rule in example.shared] == ["amount", "uploadDataCharge-*, downloadDataCharge-*"]


@pytest.mark.parametrize(("example_file", "coverage"), [(EXAMPLE_MAPPING, "jp"), (GLOBAL_EXAMPLE, "g")])
def test_each_example_mapping_maps_every_item_of_its_coverage_and_sets_no_tax(example_file, coverage):
    example = parse_mapping(example_file.read_text(encoding="utf-8"), str(example_file))
    names = _item_names(coverage)
    assert all(example.item_for(name) is not None for name in names), coverage
    assert example.currency == {"jp": "JPY", "g": "USD"}[coverage]
    assert example.reconciliation.tax is None


def test_tax_is_off_by_default_and_set_with_a_rate_and_a_rounding():
    assert parse_mapping(GOOD, "mapping.yaml").reconciliation.tax is None
    taxed = parse_mapping(GOOD + 'reconciliation:\n  tax:\n    rate: "0.10"\n    rounding: half-up\n', "mapping.yaml")
    assert taxed.reconciliation.tax is not None
    assert (taxed.reconciliation.tax.rate, taxed.reconciliation.tax.rounding) == (Decimal("0.10"), "half-up")
    assert str(taxed.reconciliation.tax.rate) == "0.10"


@pytest.mark.parametrize(
    ("tax", "expected"),
    [
        ('rate: "1.10"', "line 10: reconciliation.tax.rate: Input should be less than 1"),
        ('rate: "ten"', "line 10: reconciliation.tax.rate: Input should be a valid decimal"),
        ('rate: "0.1"\n    rounding: nearest', "line 11: reconciliation.tax.rounding: Input should be 'down', 'up'"),
        ('rates: "0.1"', "line 10: reconciliation.tax.rates: unknown field (a typo?)"),
    ],
)
def test_a_bad_tax_setting_is_refused_with_its_line_and_field(tax, expected):
    message = error_of(GOOD + f"reconciliation:\n  tax:\n    {tax}\n")
    assert expected in message


def test_defaults_apply_when_fields_are_left_out():
    minimal = parse_mapping(GOOD, "mapping.yaml")
    assert (minimal.charge_type, minimal.date_format, minimal.aggregation, minimal.packet_size) == (
        "COS",
        "date-time",
        "imsi-month",
        500,
    )
    assert minimal.items[0].uom == "units"
    assert minimal.currency is None


def test_an_already_parsed_dict_is_accepted():
    assert parse_mapping(yaml.safe_load(GOOD), "from a dict") == parse_mapping(GOOD, "mapping.yaml")


def test_a_typo_in_a_field_name_is_refused_with_its_line():
    # Given "packetsize" for "packetSize" on line 8
    message = error_of(GOOD + "packetsize: 100\n")
    # Then the error names the file, the line and the field
    assert message == "mapping.yaml: line 8: packetsize: unknown field (a typo?)"


def test_a_typo_in_a_nested_field_name_is_refused_with_its_line():
    message = error_of(GOOD.replace("    resource:", "    resorce:"))
    assert message.startswith("mapping.yaml: ")
    assert "line 7: items[0].resorce: unknown field (a typo?)" in message
    assert "line 6: items[0].resource: Field required" in message


def test_a_bad_uuid_is_refused_with_its_line_and_path():
    message = error_of(GOOD.replace('"9531985d-5d9d-49f8-9818-e811892f902b"', "tbd"))
    assert re.fullmatch(
        r"mapping\.yaml: line 4: customer\.subscriptions\.Acme\.subscription: must be a UUID such as .*, got 'tbd'",
        message,
    )


def test_uuids_are_read_in_any_case_and_kept_lower_case():
    upper = parse_mapping(GOOD.replace("90c192cf-d3ac-44af-8f21-ddb66cad4a26", RES_BASIC.upper()), "mapping.yaml")
    assert upper.items[0].resource == RES_BASIC


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("chargeType: COST", r"line 8: chargeType: Input should be 'COS', 'CHARGE' or 'MSRP'"),
        ("dateFormat: iso", r"line 8: dateFormat: Input should be 'date-time' or 'date'"),
        ("aggregation: sim", r"line 8: aggregation: Input should be 'imsi-month' or 'none'"),
        ("packetSize: 5001", r"line 8: packetSize: Input should be less than or equal to 5000"),
        ("packetSize: 0", r"line 8: packetSize: Input should be greater than or equal to 1"),
        ("currency: GBP", r"line 8: currency: Input should be 'JPY', 'USD' or 'EUR'"),
    ],
)
def test_a_bad_choice_is_refused_with_its_line(line, expected):
    assert re.search(expected, error_of(GOOD + line + "\n"))


def test_a_glob_with_an_unclosed_bracket_is_refused_with_its_line():
    message = error_of(GOOD.replace('"Basic fee"', '"Basic [fee"'))
    assert "line 6: items[0].match: glob 'Basic [fee' opens a '[' character class that never closes" in message


def test_a_yaml_syntax_error_names_its_line_and_column():
    message = error_of(GOOD.replace("  column: customer", "  column: [customer"))
    assert message == "mapping.yaml: line 3, column 16: YAML syntax error: expected ',' or ']', but got ':'"


@pytest.mark.parametrize(("value", "column", "problem"), [
    ("*", 13, "expected alphabetic or numeric character, but found '\\n'"),  # while scanning an alias
    ("&", 13, "expected alphabetic or numeric character, but found '\\n'"),  # while scanning an anchor
    ("!<", 14, "expected URI, but found '\\n'"),  # while parsing a tag
    ("@fee", 12, "found character '@' that cannot start any token"),  # signs YAML reserves
    ("`fee`", 12, "found character '`' that cannot start any token"),
    ("%fee", 12, "found character '%' that cannot start any token"),
])  # fmt: skip
def test_an_unquoted_value_starting_with_a_yaml_sign_gets_a_hint_to_quote_it(value, column, problem):
    message = error_of(GOOD.replace('"Basic fee"', value))
    assert message == (
        f"mapping.yaml: line 6, column {column}: YAML syntax error: {problem} "
        '(quote values that start with *, &, !, %, @ or `, such as globs: match: "*")'
    )


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (yaml.MarkedYAMLError(problem="found a tab"), "YAML syntax error: found a tab"),
        (yaml.MarkedYAMLError(context="while parsing a block"), "YAML syntax error: while parsing a block"),
        (yaml.MarkedYAMLError(), "YAML syntax error: syntax error"),
    ],
)
def test_a_yaml_error_that_has_no_place_is_said_without_one(raised, said):
    assert _yaml_syntax_error(raised) == said


def test_a_mistake_in_a_block_is_placed_on_its_key_s_line_not_on_the_block_s_first_line():
    message = error_of(GOOD.replace("  column: customer", '  column: customer\n  devices: {"7CDDE9000002": "Acme "}'))
    assert message.startswith("mapping.yaml: line 1: customer: device '7CDDE9000002' names customer 'Acme ', ")


def test_a_number_where_text_is_expected_gets_a_hint_to_quote_it():
    message = error_of(GOOD.replace('"Acme":', "1234:"))
    assert message == (
        "mapping.yaml: line 4: customer.subscriptions[1234] (the key): Input should be a valid string "
        '(got 1234: quote it, as in "1234")'
    )


def test_a_number_where_text_is_expected_in_an_already_parsed_dict_gets_the_hint_without_a_line():
    # what the mapping draft validates: no YAML text, so the value is quoted as Python read it
    message = error_of(yaml.safe_load(GOOD.replace('"Acme":', "1234:")))
    assert message == (
        "mapping.yaml: customer.subscriptions[1234] (the key): Input should be a valid string "
        '(got 1234: quote it, as in "1234")'
    )


def test_a_mistake_of_the_whole_mapping_is_placed_at_its_top_level():
    both = GOOD.replace('    "Acme"', '    "": {subscription: "0fd630f1-f29d-4da9-953f-48f1a09f76b5"}\n    "Acme"')
    message = error_of(
        both + 'shared:\n  - match: "VPG*"\n    to: {subscription: "0fd630f1-f29d-4da9-953f-48f1a09f76b5"}\n'
    )
    assert message == (
        'mapping.yaml: line 1: (top level): customer.subscriptions lists the value "" (rows with no customer), and '
        '`shared` rules say where such rows go: which one wins is a guess. Remove the "" entry (a `default` takes '
        "the rest)"
    )


def test_a_key_given_twice_is_refused_with_its_line():
    message = error_of(
        GOOD.replace('    "Acme":', '    "Acme": {subscription: "9531985d-5d9d-49f8-9818-e811892f902b"}\n    "Acme":')
    )
    assert message == "mapping.yaml: line 5: 'Acme' is given twice"


NOT_A_MAPPING = "the mapping file must be a YAML mapping (customer:, items:, ...)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "mapping.yaml: the mapping file is empty"),
        ("- a\n- b\n", f"mapping.yaml: line 1: {NOT_A_MAPPING}, got a list"),
        ("\n\njust text\n", f"mapping.yaml: line 3: {NOT_A_MAPPING}, got a str"),
        (GOOD + "\x07\n", "mapping.yaml: not valid YAML: unacceptable character #x0007: special characters are not "
         'allowed\n  in "<unicode string>", position 196'),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "mapping.yaml: the YAML is nested too deeply"),
        ("a: &x [*x]\n", "mapping.yaml: the YAML is nested too deeply or refers to itself (an alias)"),
        ("a: 2026-13-01\n", "mapping.yaml: the YAML cannot be read as data: month must be in 1..12"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_a_mapping_is_refused_saying_why(text, message):
    assert error_of(text) == message


def test_a_key_given_twice_inside_a_list_item_is_refused_with_its_line():
    assert error_of(GOOD.replace('    resource: "90c', '    match: "x"\n    resource: "90c')) == (
        "mapping.yaml: line 7: 'match' is given twice"
    )


def test_every_mistake_is_named_in_one_message_in_file_order():
    two = GOOD.replace("column: customer", "column: ''").replace(
        'resource: "90c192cf-d3ac-44af-8f21-ddb66cad4a26"', 'resource: "x"'
    )
    assert error_of(two) == (
        "mapping.yaml: line 2: customer.column: String should have at least 1 character; line 7: items[0].resource: "
        "must be a UUID such as 3f2a6c1e-8d4b-4e7a-9c1f-2b5d8e0a7c34, got 'x'"
    )


def test_a_mapping_given_as_data_is_refused_naming_the_field_without_a_line():
    data = yaml.safe_load(GOOD)
    data["customer"]["column"] = ""
    assert error_of(data) == "mapping.yaml: customer.column: String should have at least 1 character"
    data["customer"]["column"] = "customer"
    data["items"][0]["resource"] = "FILL-IN: CloudBlue resource for Basic fee"
    assert error_of(data) == (
        "mapping.yaml: items[0].resource: placeholder not filled in: FILL-IN: CloudBlue resource for Basic fee"
    )


def test_a_customers_row_goes_to_its_customer_even_for_an_item_a_shared_rule_sends_elsewhere():
    the_mapping = parse_mapping(
        GOOD + 'shared:\n  - match: "VPG*"\n    to: {subscription: "0fd630f1-f29d-4da9-953f-48f1a09f76b5"}\n', "m.yaml"
    )
    assert the_mapping.target_of("Acme", "VPG fee") == the_mapping.customer_for("Acme")
    shared_to = the_mapping.target_of("", "VPG fee")
    assert shared_to is not None
    assert str(shared_to.subscription) == "0fd630f1-f29d-4da9-953f-48f1a09f76b5"


def test_the_first_matching_item_wins_and_exact_names_match_literally():
    # Given an exact name with brackets, a specific glob, then a catch-all
    the_mapping = parse_mapping(
        GOOD.replace("items:\n", "items:\n")
        + """\
  - match: "Data [beta]"
    resource: "a170b338-3926-4059-b28c-105d1fb17c23"
  - match: "Data *"
    resource: "0fd630f1-f29d-4da9-953f-48f1a09f76b5"
  - match: "*"
    resource: "ae97ba94-d0ed-482f-8f6d-05584ef8aa38"
""",
        "mapping.yaml",
    )
    # Then each name gets the first entry that matches it, in file order
    resources = {name: the_mapping.item_for(name).resource for name in ["Basic fee", "Data [beta]", "Data x", "SMS"]}  # type: ignore[union-attr]
    assert resources == {
        "Basic fee": "90c192cf-d3ac-44af-8f21-ddb66cad4a26",
        "Data [beta]": "a170b338-3926-4059-b28c-105d1fb17c23",  # the exact name, though "[beta]" is also a glob
        "Data x": "0fd630f1-f29d-4da9-953f-48f1a09f76b5",
        "SMS": "ae97ba94-d0ed-482f-8f6d-05584ef8aa38",
    }
    # and globs are case-sensitive
    assert the_mapping.item_for("data x").resource == "ae97ba94-d0ed-482f-8f6d-05584ef8aa38"  # type: ignore[union-attr]


def test_customer_lookups():
    the_mapping = mapping()
    assert the_mapping.customer_for("Acme Logistics").subscription == "9531985d-5d9d-49f8-9818-e811892f902b"  # type: ignore[union-attr]
    assert the_mapping.customer_for("").subscription == SUB_DEFAULT  # type: ignore[union-attr]
    assert the_mapping.customer_for("Unlisted").subscription == SUB_DEFAULT  # type: ignore[union-attr]
    assert parse_mapping(GOOD, "m").customer_for("Unlisted") is None


def test_a_copy_with_other_items_does_not_answer_from_the_originals_cache():
    original = mapping()
    assert original.item_for("SORACOM Arc") is None
    widened = original.model_copy(
        update={"items": [*original.items, original.items[0].model_copy(update={"match": "*"})]}
    )
    assert widened.item_for("SORACOM Arc") is not None
    assert original.item_for("SORACOM Arc") is None


def test_the_mapping_is_frozen():
    with pytest.raises(ValueError, match="frozen"):
        mapping().packet_size = 1  # type: ignore[misc]


def test_the_tests_mapping_is_valid():
    assert isinstance(parse_mapping(MAPPING_YAML, "m"), Mapping)


def test_an_unknown_tag_is_refused_even_after_a_library_taught_yaml_every_tag(monkeypatch):
    # samtranslator (which the local engine runs to translate the template) registers a constructor for every
    # "!" tag on yaml.SafeLoader, for the whole process: a mapping read there must still refuse an unknown tag
    monkeypatch.setattr(yaml.SafeLoader, "yaml_multi_constructors", {"!": lambda loader, suffix, node: {suffix: 1}})
    assert yaml.safe_load("x: !custom 1") == {"x": {"custom": 1}}  # what a mapping would have become
    with pytest.raises(
        MappingError, match=r"line 1, column 4: .*could not determine a constructor for the tag '!custom'"
    ):
        parse_mapping("x: !custom 1", "polluted.yaml")


#: What fnmatch.translate makes of each (checked with it): a '[' that opens no class that closes is escaped, literal.
NEVER_CLOSES = ["[a", "x[a", "[!a", "[!]", "[]", "[!", "[", "[a][b"]  # (?s:\[a)\Z ... (?s:[a]\[b)\Z
CLOSES = ["[]]", "[!]]", "[!a]", "[a]", "a[]b]c", "[[]", "*[!]x]"]  # (?s:[]])\Z, (?s:[^]])\Z ... (?s:[\[])\Z


@pytest.mark.parametrize("pattern", NEVER_CLOSES + CLOSES)
def test_a_glob_is_refused_exactly_when_fnmatch_would_read_its_bracket_as_a_literal(pattern):
    text = GOOD.replace('"Basic fee"', f'"{pattern}"')
    if pattern in NEVER_CLOSES:
        assert f"items[0].match: glob {pattern!r} opens a '[' character class that never closes" in error_of(text)
    else:
        assert parse_mapping(text, "mapping.yaml").items[0].match == pattern


@pytest.mark.parametrize(
    ("basis", "shown"),
    [("amout", "'amout'"), ("[amount, 3]", "['amount', 3]"), ("{Basic: fee}", "{'Basic': 'fee'}"), ("[{}]", "[{}]")],
)
def test_a_sharing_basis_of_neither_shape_is_refused_in_one_message_on_its_line(basis, shown):
    # pydantic would name each member of the union (by['literal[...]'], by['list[str]'][0]): one message instead
    text = GOOD + f'shared:\n  - match: "VPG*"\n    by: {basis}\n'
    assert error_of(text) == (
        f"mapping.yaml: line 10: shared[0].by: give `amount` or a list of bill items (names or globs), not {shown}"
    )


def test_a_placeholder_under_a_key_that_is_not_text_is_named_with_a_question_mark():
    assert error_of('? [a, b]\n: "FILL-IN: x"\n') == "mapping.yaml: line 2: ?: placeholder not filled in: FILL-IN: x"


@pytest.mark.parametrize(
    ("written", "read"),
    [("!", "None"), ("&basic", "None"), ("null", "None"), ("0123", "83"), ("1.50", "1.5"), ("true", "True")],
)
def test_the_hint_to_quote_a_value_quotes_it_as_written_not_as_yaml_read_it(written, read):
    # YAML reads 0123 as octal 83 and 1.50 as 1.5: quoting what it read would change the value
    message = error_of(GOOD.replace('"Basic fee"', written))
    assert message == (
        "mapping.yaml: line 6: items[0].match: Input should be a valid string "
        f'(got {read}: quote it, as in "{written}")'
    )


def test_a_key_yaml_reads_as_a_number_is_placed_on_its_own_line_and_quoted_as_written():
    message = error_of(GOOD.replace('    "Acme": {subscription: ', "    0123:\n      {subscription: "))
    assert message == (
        "mapping.yaml: line 4: customer.subscriptions[83] (the key): Input should be a valid string "
        '(got 83: quote it, as in "0123")'
    )


def test_a_field_missing_from_a_block_is_placed_on_the_blocks_first_line():
    assert error_of(GOOD.replace("  column: customer\n", "")) == "mapping.yaml: line 2: customer.column: Field required"
