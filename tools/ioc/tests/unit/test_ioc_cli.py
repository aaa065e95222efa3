"""The operator command's plumbing with fakes: services, credentials, messages, plug-ins."""

import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from ioc_cli import app as app_module
from ioc_cli.act import _result_for, command_envelope, signed_headers, trace_id_of
from ioc_cli.app import app, main, render_status
from ioc_cli.environment import OperatorSettings, discover_services, load_operator_credential
from ioc_cli.errors import MissingCredential, OperatorError, postgres_unreachable
from ioc_cli.plugins import load_plugin
from ioc_shared.contracts import Envelope
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry
from rich.console import Console
from typer.testing import CliRunner


def make_service(root: Path, name: str, *, built: bool = True) -> None:
    module = root / name / name.replace("-", "_")
    module.mkdir(parents=True)
    (root / name / "pyproject.toml").write_text("", encoding="utf-8")
    if built:
        (module / "main.py").write_text("", encoding="utf-8")


def test_services_get_ports_in_the_order_up_sh_starts_them(tmp_path: Path) -> None:
    for name, built in (("routing", True), ("ingest", True), ("reporting", False), ("sync-province", True)):
        make_service(tmp_path, name, built=built)
    settings = OperatorSettings(services_dir=tmp_path)
    found = discover_services(settings, environ={"SYNC_PROVINCE_HTTP_PORT": "9999",
                                                 "ROUTING_DB_SCHEMA": "rt_x"})
    assert [(s.name, s.http_url, s.schema, s.group) for s in found] == [
        ("ingest", "http://127.0.0.1:18080", "ingest", "ioc-ingest"),
        ("routing", "http://127.0.0.1:18081", "rt_x", "ioc-routing"),
        ("sync-province", "http://127.0.0.1:9999", "sync_province", "ioc-sync-province"),
    ]


def test_operator_credentials_file_forms(tmp_path: Path) -> None:
    own = tmp_path / "operator.yaml"
    own.write_text("principal: ioc-operator\nsecret: s3cret-s3cret-s3cret\n", encoding="utf-8")
    assert load_operator_credential(own).principal == "ioc-operator"
    shared = REPO_ROOT / "config" / "credentials.dev.yaml"
    assert load_operator_credential(shared, "ioc-leader").secret == "dev-secret-ioc-leader-0001"
    with pytest.raises(MissingCredential, match="several principals") as several:
        load_operator_credential(shared)
    assert "--as" in several.value.hint
    with pytest.raises(MissingCredential, match="no operator credentials file") as absent:
        load_operator_credential(tmp_path / "none.yaml")
    assert absent.value.where == str(tmp_path / "none.yaml")
    with pytest.raises(OperatorError, match="--as ioc-leader"):
        load_operator_credential(own, "ioc-leader")


def test_a_command_is_signed_as_routing_verifies_it() -> None:
    registry = load_registry(REPO_ROOT / "config" / "registry.yaml",
                             REPO_ROOT / "config" / "credentials.dev.yaml")
    credential = load_operator_credential(REPO_ROOT / "config" / "credentials.dev.yaml", "ioc-operator")
    env = command_envelope("assign", "INC-1", "ioc-loc-ninh", {"unit": "phong-kt-ht", "reason": None})
    value = env.to_bytes()
    headers = dict(signed_headers(env, value, credential))
    assert env.type == "routing.command.assign" and env.subject == "INC-1" and env.key == b"INC-1"
    assert env.payload["unit"] == "phong-kt-ht" and "reason" not in env.payload
    trace_id = headers["traceparent"].decode().split("-")[1]
    assert len(trace_id) == 32 and trace_id == trace_id_of(list(headers.items()))
    principal = registry.verify_signature(headers["ioc-principal"].decode(), value,
                                          headers["ioc-signature"].decode())
    assert principal is not None and principal.id == "ioc-operator"
    assert registry.verify_signature("ioc-operator", value + b" ", headers["ioc-signature"].decode()) is None
    result = Envelope(type="routing.command.result", source_unit="ioc-loc-ninh",
                      payload={"command_id": env.payload["command_id"], "status": "accepted"})
    assert _result_for(result.to_bytes(), env.payload["command_id"]) == result.payload
    assert _result_for(result.to_bytes(), "another") is None
    assert _result_for(b"not json", "x") is None


def test_messages_say_what_where_and_what_to_do_without_the_password() -> None:
    text = postgres_unreachable("postgresql://ioc:hunter2@db:5432/ioc", OSError("refused")).render()
    assert "hunter2" not in text
    assert "where: postgresql://ioc@db:5432/ioc" in text and "IOC_DATABASE_URL" in text


def down_report() -> dict[str, Any]:
    return {"at": None, "healthy": False,
            "services": [{"name": "ingest", "url": "http://127.0.0.1:1/health", "status": "down",
                          "error": "ConnectError"}],
            "kafka": {"bootstrap": "k:9092", "reachable": False, "error": "[red]refused[/red]",
                      "hint": "start it"},
            "postgres": {"url": "postgresql://ioc@db/ioc", "reachable": True,
                         "outbox": [{"service": "ingest", "schema": "ingest", "rows": 3, "messages": 40,
                                     "oldest": None}]}}


def test_status_shows_what_is_down_and_exits_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_gather(*_: Any) -> dict[str, Any]:
        return down_report()

    monkeypatch.setattr("ioc_cli.status.gather_status", fake_gather)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1
    for text in ("ingest", "down", "Kafka unreachable", "k:9092", "start it", "40", "NOT healthy",
                 "[red]refused[/red]"):  # data is shown as it is, never read as markup
        assert text in result.output
    as_json = CliRunner().invoke(app, ["status", "--json"])
    assert as_json.exit_code == 1 and '"healthy": false' in as_json.output


def test_render_status_of_a_healthy_system() -> None:
    report = down_report()
    report["healthy"] = True
    report["kafka"] = {"bootstrap": "k", "reachable": True, "topics": [
        {"name": "ioc.x.v1", "partitions": None, "declared_partitions": 3, "present": False}],
        "groups": [{"group": "ioc-routing-intake", "service": "routing", "lag": 12, "partitions": [{}]}]}
    console = Console(record=True, width=160)
    console.print(render_status(report))
    text = console.export_text()
    assert "MISSING" in text and "ioc-routing-intake" in text and "12" in text and "healthy" in text


def test_main_turns_operator_errors_into_a_message_and_exit_code(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["ioc", "act", "verify", "INC-1",
                                      "--credentials", str(tmp_path / "missing.yaml")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == MissingCredential.exit_code
    err = capsys.readouterr().err
    assert "no operator credentials file" in err and "Traceback" not in err
    monkeypatch.setattr(sys, "argv", ["ioc", "act", "fly", "INC-1"])
    with pytest.raises(SystemExit) as unknown:
        main()
    assert unknown.value.code == 1 and "unknown verb 'fly'" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["ioc", "incidents", "list", "--limit", "zero"])
    with pytest.raises(SystemExit) as usage:
        main()
    assert usage.value.code == 2


def test_a_service_that_is_not_installed_says_so() -> None:
    runner = CliRunner()
    result = runner.invoke(load_plugin("reports", "no_such_service_package"), [])
    assert result.exit_code == 2
    assert "not installed" in result.output


def test_an_installed_service_cli_is_mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fake_reports_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "main.py").write_text(
        "import typer\ncli = typer.Typer()\n\n@cli.command()\ndef monthly() -> None:\n"
        "    typer.echo('báo cáo tháng')\n\n@cli.command()\ndef other() -> None:\n    pass\n",
        encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    mounted = load_plugin("reports", "fake_reports_pkg")
    assert isinstance(mounted, typer.Typer)
    result = CliRunner().invoke(mounted, ["monthly"])
    assert result.exit_code == 0 and "báo cáo tháng" in result.output
    (package / "main.py").write_text("raise RuntimeError('half built')\n", encoding="utf-8")
    sys.modules.pop("fake_reports_pkg.main", None)
    broken = CliRunner().invoke(load_plugin("reports", "fake_reports_pkg"), [])
    assert broken.exit_code == 2 and "half built" in broken.output


def test_replay_refuses_unknown_codes_before_touching_kafka() -> None:
    result = CliRunner().invoke(app_module.app, ["quarantine", "replay", "--since", "2026-01-01",
                                                 "--reason", "no_such_code"])
    assert isinstance(result.exception, OperatorError)
    assert "no_such_code" in result.exception.what


def test_status_watch_refreshes_until_interrupted(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    async def fake_gather(*_: Any) -> dict[str, Any]:
        calls.append(1)
        return down_report()

    def sleep(_: float) -> None:
        if len(calls) >= 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("ioc_cli.status.gather_status", fake_gather)
    monkeypatch.setattr(app_module.time, "sleep", sleep)
    monkeypatch.setattr(sys, "argv", ["ioc", "status", "--watch", "0.01"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 130 and len(calls) == 2
    assert "Traceback" not in capsys.readouterr().err
