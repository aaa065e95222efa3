"""Sub-apps of services that are not part of this package: `ioc reports`, `ioc sync`.

A service plugs in by being installed: its package's `main` module exposes a
`typer.Typer` as `ioc_app` (an operator-only app), or else `cli` / `app` (the
service's own command), which is mounted under the name given here. Nothing is
imported unless the package is installed; a package that fails to import is
reported, not raised.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

# `ioc <name>` -> the service package whose CLI it mounts.
PLUGINS: dict[str, str] = {"reports": "reporting", "sync": "sync_province"}
_ATTRIBUTES = ("ioc_app", "cli", "app")


def _placeholder(name: str, package: str, why: str) -> typer.Typer:
    app = typer.Typer(help=f"{package}: {why}", add_completion=False, invoke_without_command=True)

    @app.callback()
    def explain() -> None:
        typer.echo(f"ioc {name}: the {package} service is {why}; install it "
                   f"(bash scripts/bootstrap.sh once services/{package.replace('_', '-')} "
                   f"has a pyproject.toml) and 'ioc {name}' offers its commands", err=True)
        raise typer.Exit(2)

    return app


def load_plugin(name: str, package: str) -> typer.Typer:
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return _placeholder(name, package, "not installed")
    try:
        module = importlib.import_module(f"{package}.main")
    except Exception as exc:  # a half-built service must not break the operator's tool
        return _placeholder(name, package, f"installed but does not import ({type(exc).__name__}: {exc})")
    for attribute in _ATTRIBUTES:
        app = getattr(module, attribute, None)
        if isinstance(app, typer.Typer):
            return app
    return _placeholder(name, package, f"installed but {package}.main has no typer app "
                                       f"({' / '.join(_ATTRIBUTES)})")


def mount_plugins(parent: typer.Typer) -> None:
    for name, package in PLUGINS.items():
        parent.add_typer(load_plugin(name, package), name=name,
                         help=f"commands of the {package} service (when installed)")
