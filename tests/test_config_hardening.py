"""routes.yaml keys for what the gateway accepts from clients and who may use the admin listener:
``limits.max_request_head``, ``limits.underscores_in_headers``, ``limits.path_parameters``, ``admin.hosts`` and
``admin.read_token``. Their defaults come from the schema, ``strangler check`` accepts them, and a bad value or a
misspelling is an error with file, line and key."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config import model as config_mod
from tests.test_config import BASE, load_text, problems, run_cli


def test_defaults_come_from_the_schema(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, BASE)
    assert cfg.limits.max_request_head == 64 * 1024
    assert cfg.limits.underscores_in_headers == "drop"
    assert cfg.limits.path_parameters == "strip"
    assert cfg.admin_hosts == ()
    assert cfg.admin_read_token is False


def test_every_key_can_be_set(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, BASE + """\
limits: {max_request_head: 32KiB, underscores_in_headers: refuse, path_parameters: refuse}
admin: {listen: 127.0.0.1:9901, hosts: [strangler.internal, "10.0.0.5:9901", "[::1]:9901"], read_token: true}
""")
    assert cfg.limits.max_request_head == 32 * 1024
    assert cfg.limits.underscores_in_headers == "refuse"
    assert cfg.limits.path_parameters == "refuse"
    assert cfg.admin_hosts == ("strangler.internal", "10.0.0.5:9901", "[::1]:9901")
    assert cfg.admin_read_token is True


def test_bad_values_and_misspellings_are_errors(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + """\
limits:
  max_request_head: 10MiB
  underscores_in_headers: allow
  path_parameter: strip
admin:
  hosts: ["a@evil.com"]
  read_tokens: true
""")
    text = "\n".join(found)
    assert "routes.yaml:13: key 'limits.max_request_head': expected a size between 1KiB and 1MiB" in text
    assert "routes.yaml:14: key 'limits.underscores_in_headers': expected one of drop, refuse, pass" in text
    assert "key 'limits.path_parameter': unknown key" in text and "did you mean 'path_parameters'" in text
    assert "key 'admin.hosts[0]': expected a host name or address" in text
    assert "key 'admin.read_tokens': unknown key" in text


def test_strangler_check_and_schema_know_the_keys(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(BASE + "limits: {max_request_head: 60KiB, path_parameters: keep}\n"
                                          "admin: {hosts: [gw.internal], read_token: true}\n")
    good = run_cli("check", "--json", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    schema = config_mod.json_schema()["properties"]
    assert {"max_request_head", "underscores_in_headers", "path_parameters"} <= set(
        schema["limits"]["properties"])
    assert {"hosts", "read_token"} <= set(schema["admin"]["properties"])
    assert json.loads(run_cli("schema", cwd=tmp_path).stdout)["properties"]["limits"]["properties"][
        "path_parameters"]["enum"] == ["strip", "refuse", "keep"]
