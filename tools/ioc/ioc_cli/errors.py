"""What the operator is told when something is missing or unreachable: never a traceback."""

from __future__ import annotations


class OperatorError(Exception):
    """A problem the operator can fix: what went wrong, where, and what to do."""

    exit_code = 1

    def __init__(self, what: str, *, where: str = "", hint: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.where = where
        self.hint = hint

    def render(self) -> str:
        lines = [f"error: {self.what}"]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.hint:
            lines.append(f"  what to do: {self.hint}")
        return "\n".join(lines)


class Unreachable(OperatorError):
    exit_code = 3


class MissingCredential(OperatorError):
    exit_code = 4


def kafka_unreachable(bootstrap: str, exc: BaseException) -> Unreachable:
    return Unreachable(f"cannot reach Kafka ({type(exc).__name__}: {exc})", where=bootstrap,
                       hint="start it (bash scripts/platform.sh start) or set IOC_KAFKA_BOOTSTRAP")


def postgres_unreachable(url: str, exc: BaseException) -> Unreachable:
    return Unreachable(f"cannot reach PostgreSQL ({type(exc).__name__}: {exc})", where=_no_password(url),
                       hint="start it (bash scripts/platform.sh start) or set IOC_DATABASE_URL")


def _no_password(url: str) -> str:
    """The URL without its password, fit for a message."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    auth, host = rest.rsplit("@", 1)
    return f"{scheme}://{auth.split(':', 1)[0]}@{host}"
