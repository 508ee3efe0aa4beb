"""Assembling and running the coordinator's gRPC server (mTLS only, health and reflection on)."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordinator.config import CoordinatorConfig
from coordinator.health import DatabaseHealth
from coordinator.metrics import CoordinatorMetrics
from coordinator.rpc.agent_servicer import AgentServicer
from coordinator.rpc.interceptors import MetricsInterceptor
from coordinator.rpc.job_servicer import JobServicer
from coordinator.rpc.notifier import TaskNotifier
from coordinator.rpc.registration import add_servicer
from coordinator.service import CoordinatorService
from coordinator.store.store import Store
from fedtre.errors import Unavailable
from fedtre.identity.tls import DEFAULT_SERVER_OPTIONS, server_credentials
from fedtre.ops_http import OpsServer
from fedtre.v1 import agent_pb2, jobs_pb2

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
)


class CoordinatorServer:
    """A running coordinator: start() binds the port, stop() drains and closes."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.store = Store(config.database_url)
        self.metrics = CoordinatorMetrics()
        self.service = CoordinatorService(
            self.store, auto_approve=config.auto_approve, metrics=self.metrics
        )
        self.metrics.watch_store(self.store, self.service.clock)
        self._server: grpc.aio.Server | None = None
        self._notifier = TaskNotifier()
        self._health: DatabaseHealth | None = None
        self._ops: OpsServer | None = None
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> int:
        """Start serving; return the bound port."""
        credentials = server_credentials(self.config.tls)
        server = grpc.aio.server(
            options=list(DEFAULT_SERVER_OPTIONS), interceptors=[MetricsInterceptor(self.metrics)]
        )
        notifier = self._notifier
        add_servicer(
            server,
            jobs_pb2.DESCRIPTOR.services_by_name["JobService"],
            JobServicer(self.service, notifier),
        )
        self._agents = AgentServicer(self.service, notifier, self.config.ping_interval)
        add_servicer(server, agent_pb2.DESCRIPTOR.services_by_name["AgentService"], self._agents)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            self.port = server.add_secure_port(self.config.listen, credentials)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise Unavailable(
                f"cannot listen on '{self.config.listen}': give HOST:PORT, e.g. 127.0.0.1:50051, "
                "on a free port (is another coordinator running?)"
            )
        finished = await asyncio.to_thread(self.service.complete_leftovers)
        if finished:
            logger.info("completed jobs left over from a previous run", extra={"jobs": finished})
        await server.start()
        self._server = server

        async def report(healthy: bool) -> None:
            self.metrics.database_up.set(1 if healthy else 0)
            status = health_pb2.HealthCheckResponse
            for name in ("", *SERVICE_NAMES):
                await health_servicer.set(name, status.SERVING if healthy else status.NOT_SERVING)

        await report(True)
        self._health = DatabaseHealth(
            self.store,
            report,
            interval=self.config.health_interval,
            timeout=max(1.0, self.config.health_interval),
        )
        self._health.start()
        if self.config.metrics_listen:
            self._ops = OpsServer(
                self.config.metrics_listen, self.metrics.registry, ready=self.ready
            )
            self.metrics_port = self._ops.start()
        logger.info(
            "coordinator serving", extra={"port": self.port, "metrics_port": self.metrics_port}
        )
        return self.port

    def ready(self) -> bool:
        """Whether the coordinator serves: the gRPC server runs and the database answers."""
        return self._server is not None and self._health is not None and self._health.healthy

    async def stop(self, grace: float = 5.0) -> None:
        if self._ops is not None:
            self._ops.close()
            self._ops = None
        if self._health is not None:
            await self._health.stop()
            self._health = None
        if self._server is not None:
            # Let the open task streams end first, so shutdown needs no grace period for them.
            self._notifier.close()
            await asyncio.sleep(0)
            await self._server.stop(grace)
            await self._agents.drain()
            self._server = None
        self.store.close()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve_forever(config: CoordinatorConfig) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    server = CoordinatorServer(config)
    port = await server.start()
    print(f"coordinator listening on {config.listen.rsplit(':', 1)[0]}:{port}", flush=True)
    if server.metrics_port:
        host = config.metrics_listen.rsplit(":", 1)[0] if config.metrics_listen else ""
        print(f"metrics on http://{host}:{server.metrics_port}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("coordinator shutting down")
    await server.stop()
