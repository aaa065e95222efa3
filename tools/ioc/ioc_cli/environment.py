"""Where things are: the same `IOC_*` / `<SERVICE>_*` environment the services read.

Services are found as `scripts/up.sh` starts them: each `services/<name>/` with a
`pyproject.toml` and `<module>/main.py`, in name order, on HTTP ports 18080, 18081, ...
unless `<MODULE>_HTTP_PORT` says otherwise. A service's schema and consumer group are
`<MODULE>_DB_SCHEMA` / `<MODULE>_CONSUMER_GROUP`, by default `<module>` and `ioc-<name>`
(what ingest and routing use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from ioc_shared.platform.settings import REPO_ROOT, ServiceSettings
from pydantic_settings import SettingsConfigDict

from ioc_cli.errors import MissingCredential, OperatorError

FIRST_PORT = 18080


class OperatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    # The operator's own signing credential: `principal: ioc-operator` and `secret: ...`.
    operator_credentials: Path = Path("~/.config/ioc/operator.yaml")
    traces_file: Path | None = None
    services_dir: Path = REPO_ROOT / "services"


def up_traces_file() -> Path:
    """Where `make up` has the services write their spans (scripts/up.sh)."""
    return Path(os.environ.get("IOC_RUN_DIR") or REPO_ROOT / ".run") / "traces.jsonl"


@dataclass(frozen=True)
class ServiceInfo:
    name: str            # directory name: sync-province
    module: str          # package: sync_province
    http_url: str
    schema: str
    group: str


def discover_services(settings: OperatorSettings,
                      environ: dict[str, str] | None = None) -> list[ServiceInfo]:
    env = os.environ if environ is None else environ
    found = []
    port = FIRST_PORT
    for folder in sorted(p for p in settings.services_dir.iterdir() if p.is_dir()):
        module = folder.name.replace("-", "_")
        if not ((folder / "pyproject.toml").is_file() and (folder / module / "main.py").is_file()):
            continue
        prefix = module.upper() + "_"
        host = env.get(f"{prefix}HTTP_HOST", settings.http_host)
        own_port = env.get(f"{prefix}HTTP_PORT", str(port))
        found.append(ServiceInfo(folder.name, module, f"http://{host}:{own_port}",
                                 env.get(f"{prefix}DB_SCHEMA", module),
                                 env.get(f"{prefix}CONSUMER_GROUP", f"ioc-{folder.name}")))
        port += 1
    return found


@dataclass(frozen=True)
class Credential:
    principal: str
    secret: str
    source: Path


def load_operator_credential(path: Path, principal: str | None = None) -> Credential:
    """The principal and secret to sign with, from the operator's file.

    The file is `principal: <id>` + `secret: <secret>`, or a credentials file of the
    services (`secrets: {id: secret}`), then `principal` (`--as`) picks the entry.
    """
    path = path.expanduser()
    if not path.is_file():
        raise MissingCredential(
            "no operator credentials file", where=str(path),
            hint="create it with 'principal: ioc-operator' and 'secret: <the secret>' "
                 "(mode 600), or point IOC_OPERATOR_CREDENTIALS / --credentials at one")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MissingCredential(f"cannot read the credentials file ({exc})", where=str(path),
                                hint="fix its YAML: 'principal: ...' and 'secret: ...'") from None
    if isinstance(raw, dict) and isinstance(raw.get("secrets"), dict):
        secrets = raw["secrets"]
        if principal is None:
            raise MissingCredential("the file holds several principals", where=str(path),
                                    hint=f"choose one with --as ({', '.join(sorted(secrets))})")
        if not isinstance(secrets.get(principal), str):
            raise MissingCredential(f"no secret for principal '{principal}'", where=str(path),
                                    hint="add it, or choose another principal with --as")
        return Credential(principal, secrets[principal], path)
    if not (isinstance(raw, dict) and isinstance(raw.get("principal"), str)
            and isinstance(raw.get("secret"), str)):
        raise MissingCredential("the credentials file needs 'principal' and 'secret'", where=str(path),
                                hint="write 'principal: ioc-operator' and 'secret: <the secret>'")
    if principal is not None and principal != raw["principal"]:
        raise OperatorError(f"--as {principal} but the file is for '{raw['principal']}'", where=str(path),
                            hint="use that principal's own file (--credentials)")
    return Credential(raw["principal"], raw["secret"], path)
