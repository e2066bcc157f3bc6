"""Your own services in ``strangler demo``: a ``services.yaml`` beside routes.yaml lists the commands that serve
backends of routes.yaml, and the demo starts them with the shipped ones (docs/services.md).

```yaml
inventory:                          # a backend of routes.yaml
  run: [python, examples/inventory_service.py, --port, "{port}", --legacy-db, "{data}/legacy.db"]
  cwd: .                            # optional, relative to this file (default: its directory)
  env: {INVENTORY_MODE: demo}       # optional, added to the environment
  health: /healthz                  # optional: the demo waits until it answers 200 (default /healthz)
```

In ``run`` (and ``env`` values), ``{host}`` and ``{port}`` are the backend's address from routes.yaml,
``{data}`` the demo's data directory (the monolith's seeded database is ``{data}/legacy.db``) and ``{admin}`` the
gateway's admin listener (``OTEL_EXPORTER_OTLP_ENDPOINT`` is set to it already, ``OTEL_SERVICE_NAME`` to the
backend's name). Errors name the file and the key; unknown keys are errors, as in routes.yaml.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config.model import Config

SERVICES_FILE = "services.yaml"
KEYS = {"run", "cwd", "env", "health"}


class ServicesError(Exception):
    """A services.yaml that cannot be used: the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    run: tuple[str, ...]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    health: str = "/healthz"


def services_path(config_path: str | Path) -> Path:
    return Path(config_path).resolve().parent / SERVICES_FILE


def load_services(path: Path, cfg: Config, taken: set[str]) -> list[Service]:
    """The services of ``path`` (none if it does not exist). ``taken``: backends the demo serves itself."""
    if not path.exists():
        return []
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ServicesError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ServicesError(f"{path}: expected a mapping of backend names to services")
    out = []
    for name, spec in data.items():
        where = f"{path}: {name}"
        if name not in cfg.backends:
            raise ServicesError(f"{where}: no backend {name!r} in {cfg.path}; backends: {', '.join(cfg.backends)}")
        if name in taken:
            raise ServicesError(f"{where}: the demo already runs backend {name!r} itself")
        if not isinstance(spec, dict):
            raise ServicesError(f"{where}: expected a mapping with `run:`")
        unknown = set(spec) - KEYS
        if unknown:
            raise ServicesError(f"{where}: unknown key {sorted(unknown)[0]!r}; expected {', '.join(sorted(KEYS))}")
        run = spec.get("run")
        if not isinstance(run, list) or not run or not all(isinstance(a, str | int | float) for a in run):
            raise ServicesError(f"{where}: key 'run': expected a non-empty list (the command and its arguments)")
        env = spec.get("env") or {}
        if not isinstance(env, dict):
            raise ServicesError(f"{where}: key 'env': expected a mapping of names to values")
        health = spec.get("health", "/healthz")
        if not isinstance(health, str) or not health.startswith("/"):
            raise ServicesError(f"{where}: key 'health': expected a path such as /healthz")
        out.append(Service(name, tuple(str(a) for a in run), (path.parent / str(spec.get("cwd", "."))).resolve(),
                           {str(k): str(v) for k, v in env.items()}, health))
    return out


def start(service: Service, cfg: Config, data_dir: Path, env: dict[str, str]) -> subprocess.Popen[Any]:
    backend = cfg.backends[service.name]
    values = {"host": backend.host, "port": str(backend.port), "data": str(data_dir),
              "admin": f"http://{cfg.admin_listen[0]}:{cfg.admin_listen[1]}"}
    args = [a.format_map(values) for a in service.run]
    if args[0] in ("python", "python3"):
        args[0] = sys.executable      # the interpreter Strangler runs in, with its packages
    log_file = open(data_dir / f"{service.name}.log", "ab")  # noqa: SIM115 - handed to the child, closed at exit
    child_env = {**os.environ, **env, "OTEL_SERVICE_NAME": service.name,
                 **{k: v.format_map(values) for k, v in service.env.items()}}
    try:
        return subprocess.Popen(args, cwd=service.cwd, stdout=log_file, stderr=subprocess.STDOUT, env=child_env)
    except OSError as exc:
        raise ServicesError(f"cannot start {service.name} ({' '.join(args)}): {exc.strerror or exc}") from exc
