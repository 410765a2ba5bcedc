"""`bastion policy validate|test|explain|schema`, driven through `server.policy_cli` as the
`bastion` command will run it: readable lines, exit codes, never a traceback."""

from __future__ import annotations

import argparse
import shutil

import pytest

from server import policy_cli
from server.policy.schema import SHIPPED_POLICIES

EXAMPLES = SHIPPED_POLICIES / "examples"
EXAMPLES_CATALOG = SHIPPED_POLICIES / "tests" / "examples.yaml"


def bastion(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="bastion")
    policy_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.handler(args)


@pytest.fixture(autouse=True)
def _no_config(monkeypatch, tmp_path):
    monkeypatch.delenv("BASTION_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./bastion.yaml: the shipped policies, no live catalog


def test_validate_accepts_the_shipped_policies(capsys):
    assert bastion("policy", "validate") == 0
    assert capsys.readouterr().out.startswith("ok: 8 policies in 1 files, version ")


def test_validate_checks_the_examples_against_a_catalog(capsys):
    assert bastion("policy", "validate", "--policies", str(EXAMPLES), "--catalog", str(EXAMPLES_CATALOG)) == 0
    assert "database main" in capsys.readouterr().out


def test_validate_lists_every_problem_with_file_line_and_column_and_fails(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.cedar").write_text(
        'permit(principal, action == Action::"selekt", resource);\n'
        'permit(principal, action == Action::"select", resource == Table::"main.sales.nope");\n'
    )
    assert bastion("policy", "validate", "--policies", str(tmp_path / "p")) == 1
    err = capsys.readouterr().err
    assert 'a.cedar:1:29: unrecognized action `Action::"selekt"`' in err
    assert "Traceback" not in err


def test_validate_reports_tables_the_catalog_does_not_have(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.cedar").write_text(
        'permit(principal, action == Action::"select", resource == Table::"main.sales.nope");\n'
        'permit(principal, action == Action::"select", resource == Table::"crm.x.y");\n'
    )
    assert bastion("policy", "validate", "--policies", str(tmp_path / "p"), "--catalog", str(EXAMPLES_CATALOG)) == 1
    err = capsys.readouterr().err
    assert 'a.cedar:1:59: Table::"main.sales.nope" is not in the catalog of database main' in err
    assert 'a.cedar:2:59: Table::"crm.x.y" names database crm, which is not configured' in err


def test_test_passes_on_the_shipped_cases(capsys):
    assert bastion("policy", "test") == 0
    assert "0 failed" in capsys.readouterr().out


def test_test_fails_with_a_readable_diff_on_a_broken_case(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    text = EXAMPLES_CATALOG.read_text().replace("policies: ../examples", f"policies: {EXAMPLES}")
    broken.write_text(text.replace("HR data is off limits", "HR is fine"))
    assert bastion("policy", "test", str(broken)) == 1
    out = capsys.readouterr().out
    assert f"FAIL {broken}: analytics cannot read HR" in out
    assert "    reason: expected one containing 'HR is fine'" in out
    assert "1 failed" in out


def test_test_fails_when_the_policies_under_test_change(tmp_path, capsys):
    shutil.copytree(SHIPPED_POLICIES, tmp_path / "policies")
    weakened = tmp_path / "policies" / "examples" / "analytics.cedar"
    weakened.write_text(weakened.read_text().replace("forbid (", "permit (", 1))
    assert (
        bastion(
            "policy",
            "test",
            "--policies",
            str(tmp_path / "policies" / "examples"),
            str(tmp_path / "policies" / "tests" / "examples.yaml"),
        )
        == 1
    )
    assert "decision: expected deny, got allow" in capsys.readouterr().out


def test_a_case_naming_an_unknown_table_says_which_file_and_case(tmp_path, capsys):
    case = tmp_path / "t.yaml"
    case.write_text(
        f"policies: {SHIPPED_POLICIES}\n"
        "catalog: {database: main, tables: {public.a: {columns: {id: integer}}}}\n"
        "cases:\n"
        "  - {name: reads b, agent: x, sql: SELECT * FROM b, expect: {decision: allow}}\n"
    )
    assert bastion("policy", "test", str(case)) == 1
    out = capsys.readouterr().out
    assert f"FAIL {case}: reads b" in out
    assert f"{case}: case 'reads b': table b does not exist in database main" in out


def test_explain_shows_each_request_the_obligations_and_the_rewritten_sql(capsys):
    code = bastion(
        "policy", "explain", "--policies", str(EXAMPLES), "--catalog", str(EXAMPLES_CATALOG),
        "--agent", "eu-bot", "--group", "eu-analysts",
        "--sql", "SELECT c.id, o.amount FROM sales.customers c JOIN sales.orders o ON o.customer_id = c.id",
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("decision: allow")
    assert "select         table sales.customers" in out
    assert "by eu-sales-rows" in out
    assert "  max_rows: 500" in out
    assert "  row filter on sales.orders: region = 'EU'" in out
    assert (
        'FROM (SELECT * FROM "sales"."customers" AS "_bastion_rows" WHERE "_bastion_rows".region = \'EU\') AS c' in out
    )


def test_explain_says_when_approval_would_help(capsys):
    code = bastion(
        "policy", "explain", "--policies", str(EXAMPLES), "--catalog", str(EXAMPLES_CATALOG),
        "--agent", "night", "--group", "oncall", "--hour", "10",
        "--sql", "UPDATE support.tickets SET status = 'closed' WHERE id = 1",
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("decision: approval_required")
    assert "with approval: allowed" in out


def test_explain_without_any_catalog_is_one_readable_error():
    from server.errors import ConfigError

    with pytest.raises(ConfigError, match="no catalog to explain against"):
        bastion("policy", "explain", "--agent", "a", "--sql", "SELECT 1")


def test_schema_prints_the_static_schema_and_the_catalog_entities(capsys):
    assert bastion("policy", "schema", "--catalog", str(EXAMPLES_CATALOG)) == 0
    out = capsys.readouterr().out
    assert "action read_unmasked" in out
    assert '//       Column::"main.sales.customers.email"  (text, pii EMAIL_ADDRESS)' in out


def test_the_policy_directory_comes_from_the_config(tmp_path, capsys):
    shutil.copytree(EXAMPLES, tmp_path / "mine")
    (tmp_path / "bastion.yaml").write_text("databases: {main: {dsn: 'sqlite:///absent.db'}}\npolicies: mine\n")
    assert bastion("policy", "validate", "--config", str(tmp_path / "bastion.yaml")) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("ok: 24 policies in 8 files")
    assert "note: database main is not reachable" in captured.err


def test_validate_checks_the_live_catalog_of_a_configured_database(tmp_path, capsys):
    import sqlite3

    db = sqlite3.connect(tmp_path / "app.db")
    db.executescript("CREATE TABLE customers (id integer, region text);")
    db.close()
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.cedar").write_text(
        "@row_filter(\"region = 'EU'\")\n"
        'permit(principal, action == Action::"select", resource == Table::"app.main.customers");\n'
        'permit(principal, action == Action::"select", resource == Table::"app.main.orders");\n'
    )
    (tmp_path / "bastion.yaml").write_text("databases: {app: {dsn: 'sqlite:///app.db'}}\npolicies: p\n")
    assert bastion("policy", "validate", "--config", str(tmp_path / "bastion.yaml")) == 1
    err = capsys.readouterr().err
    assert 'a.cedar:3:59: Table::"app.main.orders" is not in the catalog of database app' in err
    assert "customers" not in err


def test_explain_uses_the_live_catalog_and_the_configured_groups(tmp_path, capsys):
    import sqlite3

    db = sqlite3.connect(tmp_path / "app.db")
    db.executescript("CREATE TABLE customers (id integer, email text, region text);")
    db.close()
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.cedar").write_text(
        '@id("eu") @row_filter("region = \'EU\'")\n'
        'permit(principal in Group::"eu", action == Action::"select", resource == Table::"app.main.customers");\n'
    )
    (tmp_path / "bastion.yaml").write_text(
        "databases: {app: {dsn: 'sqlite:///app.db'}}\npolicies: p\n"
        "identity: {agents: {eu-bot: {groups: [eu]}}}\n"
        "pii: {columns: {main.customers.email: EMAIL_ADDRESS}}\n"
    )
    config = str(tmp_path / "bastion.yaml")
    assert (
        bastion("policy", "explain", "--config", config, "--agent", "eu-bot", "--sql", "SELECT email FROM customers")
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("decision: allow")
    assert "  mask main.customers.email: default" in out
    assert "  row filter on main.customers: region = 'EU'" in out
    assert bastion("policy", "explain", "--config", config, "--agent", "other", "--sql", "SELECT 1 FROM customers") == 0
    assert capsys.readouterr().out.startswith("decision: deny")
