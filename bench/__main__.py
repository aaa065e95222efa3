"""`make bench`: run every benchmark on the local broker, print BENCH lines, write results.json.

Each service benchmark runs, in the same process and on the same broker, the
raw aiokafka reference loop over the very same messages, and reports
`ratio = service throughput / reference throughput`. Runs are repeated and
medians reported: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from ioc_shared.platform.logging import configure_logging
from ioc_shared.testing import delete_topics_of_this_run, kafka_bootstrap, unique
from pydantic import BaseModel

from bench.harness import BenchResult, fresh_topics, median, output_rate, preload
from bench.reference import reference_loop
from bench.workload import Submission, make_messages

RESULTS = Path(__file__).resolve().parent / "results.json"
SERVICE_BENCHES = ("bench.ingest", "bench.routing", "bench.reporting", "bench.sync")

app = typer.Typer(add_completion=False)


async def reference_rate(bootstrap: str, messages: list, repeats: int,
                         model: type[BaseModel] = Submission) -> list[float]:
    """Throughput of the raw aiokafka loop over `messages`, validating into `model`."""
    rates = []
    for _ in range(repeats):
        source, sink, rejected = await fresh_topics(bootstrap, "in", "out", "rejected")
        await preload(bootstrap, source, messages)
        await reference_loop(bootstrap, source, sink, rejected, len(messages), unique("bench-ref"),
                             model)
        _, rate = await output_rate(bootstrap, [sink, rejected], len(messages))
        rates.append(rate)
    return rates


async def run_all(count: int, repeats: int, only: list[str]) -> list[BenchResult]:
    bootstrap = kafka_bootstrap()
    messages = make_messages(count)
    results = []
    ref_rates = await reference_rate(bootstrap, messages, repeats)
    reference = BenchResult("reference", {"messages": count, "repeats": repeats,
                                          "messages_per_s": median(ref_rates)})
    results.append(reference)
    print(reference.line(), flush=True)
    for module_name in SERVICE_BENCHES:
        short = module_name.split(".")[-1]
        if only and short not in only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            print(f"# {short}: skipped ({exc})", flush=True)
            continue
        produced: BenchResult | list[BenchResult] = await module.run(
            bootstrap=bootstrap, messages=messages, repeats=repeats, reference=reference_rate)
        for result in produced if isinstance(produced, list) else [produced]:
            results.append(result)
            print(result.line(), flush=True)
        # Its topics (hundreds of thousands of records) would weigh on the next benchmark.
        await delete_topics_of_this_run(bootstrap)
    return results


@app.command()
def main(
    count: Annotated[int, typer.Option("--count", "--messages", help="messages per run")] = int(
        os.environ.get("BENCH_COUNT", "200000")),
    repeats: Annotated[int, typer.Option(help="runs per figure (median reported)")] = 7,
    only: Annotated[list[str] | None, typer.Option(help="service benchmarks to run")] = None,
) -> None:
    configure_logging("bench", os.environ.get("IOC_LOG_LEVEL", "WARNING"))
    os.environ.setdefault("IOC_DEV_MODE", "1")   # benchmarks run on the development credentials
    os.environ.setdefault("IOC_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")   # the local broker
    results = asyncio.run(run_all(count, repeats, only or []))
    RESULTS.write_text(json.dumps({r.name: r.figures for r in results}, indent=2,
                                  ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"# figures written to {RESULTS}")


if __name__ == "__main__":
    app()
