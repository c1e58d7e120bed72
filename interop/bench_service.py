"""The Nameko echo service the AMQP bench calls, one per `nameko run`:

    cd interop && BENCH_SERVICE=pybench10 NAMEKO_MAX_WORKERS=10 \
        .venv/bin/nameko run --config bench_config.yaml bench_service

Its name comes from BENCH_SERVICE (default `pybench`), so that services run
with different `max_workers` (NAMEKO_MAX_WORKERS, bench_config.yaml) get
queues of their own.
"""
import os

from nameko.rpc import rpc


class BenchEcho:
    name = os.environ.get("BENCH_SERVICE", "pybench")

    @rpc
    def echo(self, value):
        return value
