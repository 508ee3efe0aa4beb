"""Assembling and running the coordinator's gRPC server (TLS only, health and reflection on).

Two ports, one server: `listen` requires a client certificate from the network CA
(agents; people may use it too, with their token), `api_listen` serves people over
TLS without one (they authenticate with API tokens). coordinator.auth has the rules.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordinator.admin import Admin
from coordinator.applications import Applications, register_pages
from coordinator.auth import Authenticator, RevocationList
from coordinator.catalogue import catalogue_pages
from coordinator.checkpoints import AuditCheckpoints
from coordinator.config import CoordinatorConfig
from coordinator.health import DatabaseHealth
from coordinator.metrics import CoordinatorMetrics
from coordinator.rpc.admin_servicer import AdminServicer
from coordinator.rpc.agent_servicer import AgentServicer
from coordinator.rpc.application_servicer import ApplicationServicer
from coordinator.rpc.interceptors import MetricsInterceptor, RefusalInterceptor
from coordinator.rpc.job_servicer import JobServicer
from coordinator.rpc.notifier import TaskNotifier
from coordinator.rpc.registration import add_servicer
from coordinator.scheduler import Scheduler
from coordinator.service import CoordinatorService
from coordinator.store import replicas
from coordinator.store.checkpoints import CheckpointStore
from coordinator.store.store import Store
from fedtre.errors import Unavailable
from fedtre.identity.signing import Signer, load_signing_key
from fedtre.identity.tls import (
    DEFAULT_SERVER_OPTIONS,
    api_server_credentials,
    server_credentials,
)
from fedtre.ops_http import OpsServer
from fedtre.v1 import admin_pb2, agent_pb2, applications_pb2, jobs_pb2

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    applications_pb2.DESCRIPTOR.services_by_name["ApplicationService"].full_name,
)


class CoordinatorServer:
    """A running coordinator: start() binds the port, stop() drains and closes."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.store = Store(config.database_url, replica=replicas.replica_id())
        # PostgreSQL may be shared by several replicas (coordinator.store.replicas).
        self.replicated = replicas.is_postgresql(self.store.engine)
        self.metrics = CoordinatorMetrics()
        self.signer = Signer(load_signing_key(config.signing_key_file))
        self.service = CoordinatorService(
            self.store,
            auto_approve=config.auto_approve,
            metrics=self.metrics,
            signer=self.signer,
            default_deadline_s=config.default_deadline,
            offline_after_s=config.offline_after,
            max_deliveries=config.max_deliveries,
            max_result_bytes=config.max_result_bytes,
            max_in_flight=config.max_in_flight,
        )
        engine = self.store.engine
        self.checkpoints = AuditCheckpoints(
            CheckpointStore(self.store), self.signer, self.service.clock
        )
        self.scheduler = Scheduler(
            self.service,
            config.tick_interval,
            lock=(lambda: replicas.tick_lock(engine)) if self.replicated else None,
            after_tick=self.checkpoints.publish_if_due,
        )
        self._wakeups: replicas.Wakeups | None = None
        self.admin = Admin(self.store, self.service.clock)
        self.applications = Applications(
            self.store, self.admin, self.service.clock, config.committee_approvals
        )
        self.revocations = RevocationList.beside(config.tls.ca, config.crl_file)
        self.auth = Authenticator(self.store.governance, self.revocations, clock=self.service.clock)
        self._watcher: asyncio.Task[None] | None = None
        self._refusals: asyncio.Task[None] | None = None
        self.api_port = 0
        self.metrics.watch_store(self.store, self.service.clock)
        self._server: grpc.aio.Server | None = None
        self._notifier = TaskNotifier()
        self._health: DatabaseHealth | None = None
        self._ops: OpsServer | None = None
        self.port = 0
        self.metrics_port = 0

    def _record_certificate_expiry(self) -> None:
        ca, cert, _ = self.config.tls.read()
        for role, pem in (("coordinator", cert), ("ca", ca)):
            not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc
            self.metrics.certificate_seen(role, role, not_after)

    async def start(self) -> int:
        """Start serving; return the bound port."""
        credentials = server_credentials(self.config.tls)  # a missing file: a clear error
        self._record_certificate_expiry()
        server = grpc.aio.server(
            options=list(DEFAULT_SERVER_OPTIONS),
            interceptors=[MetricsInterceptor(self.metrics), RefusalInterceptor(self.auth)],
        )
        notifier = self._notifier
        # Later rounds of multi-round jobs are queued on worker threads: wake their
        # nodes' streams on this loop.
        loop = asyncio.get_running_loop()

        def wake(nodes: Sequence[str]) -> None:
            loop.call_soon_threadsafe(notifier.wake, list(nodes))

        def cancel(tasks: Sequence[tuple[str, str, str]]) -> None:
            loop.call_soon_threadsafe(notifier.cancel, list(tasks))

        self.service.on_tasks_queued = wake
        self.service.on_tasks_cancelled = cancel
        if self.replicated:
            self._wakeups = replicas.Wakeups(
                self.store.engine,
                on_wake=lambda nodes: loop.call_soon_threadsafe(notifier.wake_local, nodes),
                on_cancel=lambda tasks: loop.call_soon_threadsafe(notifier.cancel_local, tasks),
                on_resync=lambda: loop.call_soon_threadsafe(notifier.wake_all),
            )
            await asyncio.to_thread(self._wakeups.start)
            notifier.relay_wake = self._wakeups.wake
            notifier.relay_cancel = self._wakeups.cancel
        add_servicer(
            server,
            jobs_pb2.DESCRIPTOR.services_by_name["JobService"],
            JobServicer(self.service, notifier, self.auth),
        )
        self._agents = AgentServicer(
            self.service,
            notifier,
            self.config.ping_interval,
            self.auth,
            poll_interval=self.config.queue_poll_interval if self.replicated else None,
            checkpoints=self.checkpoints,
        )
        add_servicer(server, agent_pb2.DESCRIPTOR.services_by_name["AgentService"], self._agents)
        add_servicer(
            server,
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
            AdminServicer(self.admin, self.auth),
        )
        add_servicer(
            server,
            applications_pb2.DESCRIPTOR.services_by_name["ApplicationService"],
            ApplicationServicer(self.applications, self.auth),
        )
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
        if self.config.api_listen:
            try:
                self.api_port = server.add_secure_port(
                    self.config.api_listen, api_server_credentials(self.config.tls)
                )
            except RuntimeError:
                self.api_port = 0
            if self.api_port == 0:
                raise Unavailable(
                    f"cannot listen on '{self.config.api_listen}' (the API port): give "
                    "HOST:PORT on a free port, e.g. 127.0.0.1:50052"
                )
        # Resume what a crash interrupted: jobs created but not yet auto-approved, and jobs
        # whose tasks are all done but not yet combined (the tick keeps doing the latter).
        resumed = await asyncio.to_thread(self.service.resume_pending)
        finished = await asyncio.to_thread(self.service.complete_leftovers)
        if finished or resumed:
            logger.info(
                "resumed jobs left over from a previous run",
                extra={"completed": finished, "approved": resumed},
            )
        await server.start()
        self._server = server
        self.scheduler.start()

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
                self.config.metrics_listen,
                self.metrics.registry,
                ready=self.ready,
                pages={**register_pages(self.applications), **catalogue_pages(self.store)},
            )
            self.metrics_port = self._ops.start()
        self._watcher = asyncio.create_task(self._watch_revocations())
        self._refusals = asyncio.create_task(self._flush_refusals())
        logger.info(
            "coordinator serving",
            extra={"port": self.port, "api_port": self.api_port, "metrics_port": self.metrics_port},
        )
        return self.port

    async def _watch_revocations(self) -> None:
        """Close the open streams of certificates revoked since the last look."""
        seen = self.revocations.generation
        while True:
            await asyncio.sleep(self.config.revocation_interval)
            try:
                await asyncio.to_thread(self.revocations.refresh)
            except Exception:
                logger.exception("checking the revocation list failed")
            if self.revocations.generation != seen:
                seen = self.revocations.generation
                self._agents.recheck_certificates()

    async def _flush_refusals(self) -> None:
        """Audit each ended window's repeated refusals as one counted entry per kind."""
        while True:
            await asyncio.sleep(self.auth.guard.window.total_seconds() / 4)
            try:
                await asyncio.to_thread(self.auth.flush_refusals)
            except Exception:
                logger.exception("auditing repeated refusals failed; the next pass retries")

    def ready(self) -> bool:
        """Whether the coordinator serves: the gRPC server runs and the database answers."""
        return self._server is not None and self._health is not None and self._health.healthy

    async def stop(self, grace: float = 5.0) -> None:
        """Drain: stop the timers, let calls in flight (results being reported) finish
        within grace seconds, record the streams' disconnects, then close the database."""
        await asyncio.to_thread(self.scheduler.stop)
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._refusals is not None:
            self._refusals.cancel()
            self._refusals = None
            await asyncio.to_thread(self.auth.flush_refusals, True)
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
        if self._wakeups is not None:
            await asyncio.to_thread(self._wakeups.stop)
            self._wakeups = None
        self.store.close()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve_forever(config: CoordinatorConfig) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    server = CoordinatorServer(config)
    port = await server.start()
    print(f"coordinator listening on {config.listen.rsplit(':', 1)[0]}:{port}", flush=True)
    if server.api_port and config.api_listen:
        host = config.api_listen.rsplit(":", 1)[0]
        print(f"API (TLS, API tokens) on {host}:{server.api_port}", flush=True)
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
