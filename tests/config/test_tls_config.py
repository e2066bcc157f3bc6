"""The `tls:` blocks of routes.yaml: https:// backends, the files they name checked at load (readable, parseable,
key matching the certificate, not expired, days left), and what `strangler check` says about them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config.model import BackendTLS
from gateway.config.parse import ConfigError, load
from tests.support import Certs

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value.problems


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path / "certs")


def test_an_https_backend_defaults_to_port_443_and_system_cas(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, """\
        version: 1
        backends: {pay: {url: "https://payments.internal/v1"}}
        fallback: pay
        """))
    b = cfg.backends["pay"]
    assert (b.scheme, b.host, b.port, b.base_path) == ("https", "payments.internal", 443, "/v1")
    assert b.tls == BackendTLS()


def test_backend_tls_files_resolve_beside_routes_yaml(tmp_path: Path, certs: Certs) -> None:
    certs.leaf("gw")
    cfg = load(write(tmp_path, """\
        version: 1
        backends:
          pay:
            url: https://10.0.0.7:8443
            tls: {ca: certs/ca.pem, cert: certs/gw.pem, key: certs/gw.key, server_name: payments.internal}
        fallback: pay
        """))
    tls = cfg.backends["pay"].tls
    assert tls == BackendTLS(certs.ca_file, certs.dir / "gw.pem", certs.dir / "gw.key", "payments.internal")


def test_tls_on_an_http_backend_is_an_error(tmp_path: Path, certs: Certs) -> None:
    out = problems(write(tmp_path, f"""\
        version: 1
        backends: {{b: {{url: "http://127.0.0.1:1", tls: {{ca: {certs.ca_file}}}}}}}
        fallback: b
        """))
    assert out == [f"{tmp_path / 'routes.yaml'}:2: key 'backends.b.tls': `tls` applies to https:// backends only; "
                   "this URL is http://"]


def test_a_client_certificate_needs_its_key(tmp_path: Path, certs: Certs) -> None:
    cert, _, _ = certs.leaf("gw")
    out = problems(write(tmp_path, f"""\
        version: 1
        backends:
          b:
            url: https://127.0.0.1:1
            tls: {{cert: {cert}}}
        fallback: b
        """))
    assert len(out) == 1 and "key 'backends.b.tls.key'" in out[0] and "needs both `cert` and `key`" in out[0]


def test_unknown_tls_keys_are_errors(tmp_path: Path) -> None:
    out = problems(write(tmp_path, """\
        version: 1
        backends: {b: {url: "https://127.0.0.1:1", tls: {verify: false}}}
        fallback: b
        """))
    assert len(out) == 1 and "verify" in out[0]


@pytest.mark.parametrize("case, message", [
    ("missing", "cannot read"),
    ("not_pem", "holds no PEM certificate"),
    ("wrong_key", "is not the key of the certificate"),
    ("expired", "expired on"),
])
def test_listener_files_are_checked(tmp_path: Path, certs: Certs, case: str, message: str) -> None:
    cert, key, _ = certs.leaf("site")
    if case == "missing":
        cert = certs.dir / "nope.pem"
    elif case == "not_pem":
        cert.write_text("hello\n")
    elif case == "wrong_key":
        _, key, _ = certs.leaf("other")
    else:
        cert, key, _ = certs.leaf("old", not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    out = problems(write(tmp_path, f"""\
        version: 1
        tls: {{cert: {cert}, key: {key}}}
        backends: {{b: {{url: "http://127.0.0.1:1"}}}}
        fallback: b
        """))
    assert len(out) == 1, out
    assert out[0].startswith(f"{tmp_path / 'routes.yaml'}:2: key 'tls.cert': ")
    assert message in out[0]


def test_an_unreadable_ca_is_an_error_at_its_key(tmp_path: Path) -> None:
    out = problems(write(tmp_path, """\
        version: 1
        backends:
          b:
            url: https://127.0.0.1:1
            tls: {ca: /nonexistent/ca.pem}
        fallback: b
        """))
    assert len(out) == 1 and "key 'backends.b.tls.ca': cannot read /nonexistent/ca.pem" in out[0]


def test_a_certificate_close_to_expiry_is_a_warning(tmp_path: Path, certs: Certs) -> None:
    cert, key, _ = certs.leaf("site", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=5, hours=1))
    cfg = load(write(tmp_path, f"""\
        version: 1
        tls: {{cert: {cert}, key: {key}}}
        backends: {{b: {{url: "http://127.0.0.1:1"}}}}
        fallback: b
        """))
    assert cfg.tls is not None and cfg.tls.cert == cert
    assert len(cfg.warnings) == 1 and "expires in 5 day(s)" in cfg.warnings[0]


def test_strangler_check_shows_each_certificate_and_its_days_left(tmp_path: Path, certs: Certs) -> None:
    cert, key, _ = certs.leaf("site", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=90, hours=1))
    gw_cert, gw_key, _ = certs.leaf("gw")
    path = write(tmp_path, f"""\
        version: 1
        tls: {{cert: {cert}, key: {key}}}
        backends:
          pay: {{url: "https://127.0.0.1:8443", tls: {{ca: {certs.ca_file}, cert: {gw_cert}, key: {gw_key}}}}}
        fallback: pay
        """)
    run = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(path)], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith(f"tls: listener: {cert}: ") and "(90 days left)" in line for line in lines), lines
    assert any(line.startswith(f"tls: backend pay ca: {certs.ca_file}") for line in lines), lines
    assert any(line.startswith(f"tls: backend pay client certificate: {gw_cert}") for line in lines), lines
    as_json = subprocess.run([sys.executable, "-m", "gateway", "check", "--json", "-c", str(path)],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert len(json.loads(as_json.stdout)["tls"]) == 3


def test_strangler_check_refuses_a_mismatched_key(tmp_path: Path, certs: Certs) -> None:
    cert, _, _ = certs.leaf("site")
    _, other_key, _ = certs.leaf("other")
    path = write(tmp_path, f"""\
        version: 1
        tls: {{cert: {cert}, key: {other_key}}}
        backends: {{b: {{url: "http://127.0.0.1:1"}}}}
        fallback: b
        """)
    run = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(path)], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 1
    assert f"is not the key of the certificate in {cert}" in run.stderr
