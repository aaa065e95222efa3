"""A provincial IOC gateway simulator: `python -m sync_province.simulator --port N ...`.

A real separate process for tests and benchmarks. It takes batches as the province's
data-sharing gateway would (bearer token, `Idempotency-Key` per batch, event id per
record), stores them in its own PostgreSQL schema, answers reconciliation queries with
the same figures the district computes, and keeps the checkpoints it was sent.
HTTPS when given a certificate and key (e.g. one issued by the local platform CA);
plain HTTP on loopback otherwise.

Admin endpoint (no auth, loopback only): `POST /admin/mode` with
`{"mode": "ok|fail|throttle|slow|reject|down", "retry_after": s, "delay": s, "times": n}`:
fail answers 500, throttle 429 + Retry-After, slow waits `delay` before answering, reject
answers 400, down exits the process. `times` limits the mode to n batch requests.
`GET /admin/requests` lists when each batch request came (and its idempotency key) and
how it was answered.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import typer
import uvicorn
from ioc_shared.platform.db import create_pool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_province.domain import Figures, local_day

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.received (
    seq bigserial, event_id text PRIMARY KEY, district text NOT NULL, stream text NOT NULL,
    key text NOT NULL, partition integer NOT NULL, source_offset bigint NOT NULL,
    timestamp_ms bigint NOT NULL, day date NOT NULL, headers jsonb NOT NULL, value jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {s}.batches (
    idempotency_key text PRIMARY KEY, answer jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {s}.checkpoints (
    id bigserial PRIMARY KEY, body jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now());
"""


class Simulator:
    def __init__(self, pool: asyncpg.Pool, schema: str, token: str | None) -> None:
        self.pool = pool
        self.s = schema
        self.token = token
        self.mode: dict[str, Any] = {"mode": "ok"}
        self.log: list[dict[str, Any]] = []

    def _authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    def _mode_now(self) -> dict[str, Any]:
        mode = self.mode
        times = mode.get("times")
        if times is not None:
            if times <= 0:
                self.mode = mode = {"mode": "ok"}
            else:
                mode["times"] = times - 1
        return mode

    async def batches(self, request: Request) -> Response:
        arrived = time.time()
        if not self._authorised(request):
            return JSONResponse({"error": "unauthenticated"}, 401)
        mode = dict(self._mode_now())
        answer = await self._answer(request, mode)
        self.log.append({"at": arrived, "status": answer.status_code, "mode": mode["mode"],
                         "key": request.headers.get("idempotency-key")})
        return answer

    async def _answer(self, request: Request, mode: dict[str, Any]) -> Response:
        name = mode["mode"]
        if name == "fail":
            return JSONResponse({"error": "simulated failure"}, 500)
        if name == "throttle":
            return JSONResponse({"error": "slow down"}, 429,
                                headers={"Retry-After": str(mode.get("retry_after", 1))})
        if name == "reject":
            return JSONResponse({"error": "rejected", "reason": mode.get("reason", "simulated")}, 400)
        if name == "slow":
            await asyncio.sleep(float(mode.get("delay", 1.0)))
        key = request.headers.get("idempotency-key")
        if not key:
            return JSONResponse({"error": "Idempotency-Key header required"}, 400)
        body = orjson.loads(await request.body())
        async with self.pool.acquire() as conn, conn.transaction():
            seen = await conn.fetchval(f"SELECT answer FROM {self.s}.batches WHERE idempotency_key=$1",
                                       key)
            if seen is not None:
                return Response(seen, 200, media_type="application/json",
                                headers={"Idempotent-Replayed": "true"})
            recs = body["records"]
            inserted = await conn.fetch(
                f"INSERT INTO {self.s}.received (event_id, district, stream, key, partition,"
                " source_offset, timestamp_ms, day, headers, value)"
                " SELECT e, $2, $3, k, p, o, t, d, h::jsonb, v::jsonb FROM unnest($1::text[],"
                " $4::text[], $5::int[], $6::bigint[], $7::bigint[], $8::date[], $9::text[],"
                " $10::text[]) AS u(e, k, p, o, t, d, h, v)"
                " ON CONFLICT (event_id) DO NOTHING RETURNING 1",
                [r["event_id"] for r in recs], body["district"], body["stream"],
                [r["key"] for r in recs], [r["partition"] for r in recs],
                [r["offset"] for r in recs], [r["timestamp_ms"] for r in recs],
                [local_day(r["timestamp_ms"]) for r in recs],
                [orjson.dumps(r["headers"]).decode() for r in recs],
                [orjson.dumps(r["value"]).decode() for r in recs])
            accepted = len(inserted)
            rows = recs
            answer = orjson.dumps({"accepted": accepted, "duplicates": len(rows) - accepted})
            await conn.execute(f"INSERT INTO {self.s}.batches (idempotency_key, answer)"
                               " VALUES ($1, $2::jsonb)", key, answer.decode())
        return Response(answer, 200, media_type="application/json")

    async def reconcile(self, request: Request) -> Response:
        if not self._authorised(request):
            return JSONResponse({"error": "unauthenticated"}, 401)
        q = request.query_params
        ids = [r["event_id"] for r in await self.pool.fetch(
            f"SELECT event_id FROM {self.s}.received WHERE stream = $1 AND day = $2",
            q["stream"], date.fromisoformat(q["day"]))]
        figures = Figures.of(ids)
        body: dict[str, Any] = {"count": figures.count, "checksum": figures.checksum}
        if q.get("ids"):
            body["event_ids"] = ids
        return JSONResponse(body)

    async def checkpoints(self, request: Request) -> Response:
        if not self._authorised(request):
            return JSONResponse({"error": "unauthenticated"}, 401)
        await self.pool.execute(f"INSERT INTO {self.s}.checkpoints (body) VALUES ($1::jsonb)",
                                (await request.body()).decode())
        return JSONResponse({"stored": True})

    async def admin_mode(self, request: Request) -> Response:
        mode = orjson.loads(await request.body())
        if mode.get("mode") == "down":
            asyncio.get_running_loop().call_later(0.05, os._exit, 0)
            return JSONResponse({"mode": "down"})
        self.mode = mode
        return JSONResponse(self.mode)

    async def admin_requests(self, _: Request) -> Response:
        return JSONResponse(self.log)

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})


app = typer.Typer(add_completion=False)


@app.command()
def main(port: int = 18443, host: str = "127.0.0.1",
         database_url: str = os.environ.get("IOC_DATABASE_URL", "postgresql://ioc@127.0.0.1:15432/ioc"),
         schema: str = "province_sim", token_file: str | None = None,
         tls_cert: str | None = None, tls_key: str | None = None) -> None:
    token = Path(token_file).read_text(encoding="utf-8").strip() if token_file else None

    async def serve() -> None:
        pool = await create_pool(database_url, max_size=4)
        await pool.execute(SCHEMA_SQL.format(s=schema))
        sim = Simulator(pool, schema, token)
        starlette = Starlette(routes=[
            Route("/v1/batches", sim.batches, methods=["POST"]),
            Route("/v1/reconcile", sim.reconcile), Route("/v1/checkpoints", sim.checkpoints,
                                                         methods=["POST"]),
            Route("/admin/mode", sim.admin_mode, methods=["POST"]),
            Route("/admin/requests", sim.admin_requests), Route("/health", sim.health)])
        config = uvicorn.Config(starlette, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off", ssl_certfile=tls_cert, ssl_keyfile=tls_key)
        await uvicorn.Server(config).serve()

    asyncio.run(serve())


if __name__ == "__main__":
    app()
