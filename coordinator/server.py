"""Assembling and running the coordinator's gRPC server (mTLS only, health and reflection on)."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordinator.config import CoordinatorConfig
from coordinator.rpc.agent_servicer import AgentServicer
from coordinator.rpc.job_servicer import JobServicer
from coordinator.rpc.notifier import TaskNotifier
from coordinator.service import CoordinatorService
from coordinator.store.store import Store
from fedtre.identity.tls import DEFAULT_SERVER_OPTIONS, server_credentials
from fedtre.v1 import agent_pb2, agent_pb2_grpc, jobs_pb2, jobs_pb2_grpc

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
        self.service = CoordinatorService(self.store, auto_approve=config.auto_approve)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        """Start serving; return the bound port."""
        credentials = server_credentials(self.config.tls)
        server = grpc.aio.server(options=list(DEFAULT_SERVER_OPTIONS))
        notifier = TaskNotifier()
        jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(self.service, notifier), server)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentServicer(self.service, notifier, self.config.ping_interval), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = server.add_secure_port(self.config.listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}; is the port in use?")
        finished = await asyncio.to_thread(self.service.complete_leftovers)
        if finished:
            logger.info("completed jobs left over from a previous run", extra={"jobs": finished})
        await server.start()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        logger.info("coordinator serving", extra={"port": self.port})
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("coordinator shutting down")
    await server.stop()
