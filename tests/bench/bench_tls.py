"""The ``tls`` scenario: what speaking HTTPS to the backend costs, the gateway against nginx (``proxy_ssl``).

    HTTP to backend / HTTPS to backend      pass-through CPU per request, keep-alive upstream (one handshake per
                                            pooled connection), gateway and nginx measured in turns in one run
    HTTPS, keep-alive off                   the backend closes after every answer, so every request opens a new
                                            upstream connection: requests per second = handshakes per second
                                            (resumed ones: both proxies reuse the TLS session)

Certificates are made at run time (trustme); both proxies verify the backend against that CA. The backends are the
benchmark's own (``--backend`` build), started with ``--tls-cert`` and, for the handshake runs, ``--close``.
"""

from __future__ import annotations

from pathlib import Path

import trustme

from tests.bench import configs, procs
from tests.bench.configs import MEASURED_PATH, GatewaySetup
from tests.bench.procs import Proc
from tests.bench.run import NGINX, Bench, Subject
from tests.bench.run import Gateway as RunningGateway


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    paths = directory / "ca.pem", directory / "backend.pem", directory / "backend.key"
    ca.cert_pem.write_to_path(str(paths[0]))
    leaf.cert_chain_pems[0].write_to_path(str(paths[1]))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(paths[1]), append=True)
    leaf.private_key_pem.write_to_path(str(paths[2]))
    return paths


def _tls_backend(b: Bench, name: str, cert: Path, key: Path, close: bool) -> int:
    port = procs.free_port()
    argv = [procs.python(), "-m", "tests.bench.backend", "--port", str(port), "--server", b.opts.backend,
            "--tls-cert", str(cert), "--tls-key", str(key)] + (["--close"] if close else [])
    proc = b.procs.start(name, argv, role="load")
    procs.wait_port(port, 15, proc.popen, name)
    return port


def _nginx_tls(b: Bench, name: str, backend: int, ca: Path) -> tuple[Proc, int]:
    """nginx as in the pass-through scenario, its upstream over verified TLS with session reuse."""
    port = procs.free_port()
    ndir = b.workdir / name
    ndir.mkdir(exist_ok=True)
    conf = configs.nginx_conf(ndir, listen=port, backend=backend).replace(
        "proxy_pass http://backend;",
        f"""proxy_pass https://backend;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;""")
    (ndir / "nginx.conf").write_text(conf)
    proc = b.procs.start(name, [NGINX, "-p", str(ndir), "-c", str(ndir / "nginx.conf"), "-e",
                                str(ndir / "error.log")], role="proxy")
    procs.wait_port(port, 15, proc.popen, name)
    return proc, port


def tls(b: Bench) -> None:
    name = "tls"
    ca, cert, key = _certificates(b.workdir / "tls-certs")
    tls_port = _tls_backend(b, "tls-backend", cert, key, close=False)
    close_port = _tls_backend(b, "tls-backend-close", cert, key, close=True)
    started: list[Proc] = []
    try:
        gw_plain = _gateway(b, started, GatewaySetup(), "gateway-http", None)
        gw_tls = _gateway(b, started, GatewaySetup(legacy_ca=ca), "gateway-https", tls_port)
        gw_close = _gateway(b, started, GatewaySetup(legacy_ca=ca), "gateway-https-close", close_port)
        ng_plain, ng_plain_port = b.start_nginx()
        started.append(ng_plain)
        ng_tls, ng_tls_port = _nginx_tls(b, "nginx-https", tls_port, ca)
        started.append(ng_tls)
        ng_close, ng_close_port = _nginx_tls(b, "nginx-https-close", close_port, ca)
        started.append(ng_close)

        g_http, g_https, n_http, n_https = b.measure_together(name, [
            Subject("gateway", "HTTP to backend", gw_plain.proc, gw_plain.port, MEASURED_PATH),
            Subject("gateway", "HTTPS to backend", gw_tls.proc, gw_tls.port, MEASURED_PATH,
                    baseline="HTTP to backend"),
            Subject("nginx", "HTTP to backend", ng_plain, ng_plain_port, MEASURED_PATH),
            Subject("nginx", "HTTPS to backend", ng_tls, ng_tls_port, MEASURED_PATH, baseline="HTTP to backend")])
        g_hs, n_hs = b.measure_together(name, [
            Subject("gateway", "HTTPS, keep-alive off", gw_close.proc, gw_close.port, MEASURED_PATH),
            Subject("nginx", "HTTPS, keep-alive off", ng_close, ng_close_port, MEASURED_PATH)])
    finally:
        for proc in started:
            b.procs.stop(proc)

    g_extra = g_https.cpu_us - g_http.cpu_us
    n_extra = n_https.cpu_us - n_http.cpu_us
    b.note(f"tls: TLS to the backend adds {g_extra:.1f} us CPU per request to the gateway "
           f"(x{g_https.cpu_us / g_http.cpu_us:.2f}) and {n_extra:.1f} us to nginx "
           f"(x{n_https.cpu_us / n_http.cpu_us:.2f})" if g_http.cpu_us and n_http.cpu_us else "tls: no CPU figures")
    b.note(f"tls: keep-alive off (a new upstream TLS connection per request): gateway {g_hs.rps:.0f} handshakes/s "
           f"at {g_hs.cpu_us:.0f} us CPU each, nginx {n_hs.rps:.0f}/s at {n_hs.cpu_us:.0f} us")
    if g_http.cpu_us:
        b.target(name, "HTTPS to the backend costs the gateway at most 1.5x the CPU per request of HTTP",
                 g_https.cpu_us <= 1.5 * g_http.cpu_us, f"x{g_https.cpu_us / g_http.cpu_us:.2f}")


def _gateway(b: Bench, started: list[Proc], setup: GatewaySetup, name: str, backend: int | None
             ) -> RunningGateway:
    gw = b.start_gateway(setup, name=name, backend=backend)
    started.append(gw.proc)
    return gw
