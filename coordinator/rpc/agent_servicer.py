"""fedtre.v1.AgentService: what node agents call. The node id is always the certificate's."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

import grpc
from cryptography.hazmat.primitives import serialization

from coordinator.auth import Authenticator, peer_certificate
from coordinator.checkpoints import AuditCheckpoints
from coordinator.domain.model import Job, Task
from coordinator.rpc.batching import Batcher
from coordinator.rpc.convert import task_to_pb
from coordinator.rpc.errors import rpc_method
from coordinator.rpc.notifier import TaskNotifier
from coordinator.service import CoordinatorService, Report
from fedtre.errors import InvalidRequest, Unauthenticated
from fedtre.identity.peer import Identity
from fedtre.v1 import agent_pb2, agent_pb2_grpc
from fedtre.wire import output_from_parts, provenance_from_pb, schemas_from_pb

NODES = ("node",)

# A task taken for a stream, with its signed grant: (task, job, grant, signature).
Taken = tuple[Task, Job, bytes, bytes]
T = TypeVar("T")


def _each_none(write: Callable[[Sequence[T]], None]) -> Callable[[Sequence[T]], list[None]]:
    """A batch write with nothing to return per item, as Batcher expects it."""

    def written(items: Sequence[T]) -> list[None]:
        write(items)
        return [None] * len(items)

    return written


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        service: CoordinatorService,
        notifier: TaskNotifier,
        ping_interval: float,
        auth: Authenticator | None = None,
        poll_interval: float | None = None,
        checkpoints: AuditCheckpoints | None = None,
    ) -> None:
        """poll_interval: seconds after which an idle stream looks at its node's queue
        unwoken (with several replicas, the safety net should a wake-up be lost); None:
        only when woken. checkpoints: the audit checkpoints each stream sends (when it
        opens, then at each heartbeat) and agents countersign."""
        self._service = service
        self._checkpoints = checkpoints
        self._notifier = notifier
        self._ping_interval = ping_interval
        self._poll_interval = poll_interval
        self._disconnecting: set[asyncio.Future[None]] = set()
        self.auth = auth  # read by rpc_method: certificates checked against the CRL
        # The wake event of every open stream, so a revocation can end them at once.
        self._open: set[asyncio.Event] = set()
        # Streams woken together, and reports arriving together, share one transaction.
        batch_size = service.metrics.write_batch_size
        self._dispatch: Batcher[str, list[Taken]] = Batcher(
            service.take_tasks_for,
            on_abandoned=lambda _node, taken: service.requeue([task for task, *_ in taken]),
            on_batch=batch_size.labels("dispatch").observe,
        )
        self._reports: Batcher[Report, None] = Batcher(
            service.record_results, on_batch=batch_size.labels("report").observe
        )
        self._heartbeats: Batcher[tuple[str, str], None] = Batcher(
            _each_none(service.nodes_seen), on_batch=batch_size.labels("heartbeat").observe
        )

    def recheck_certificates(self) -> None:
        """Wake every open stream to check its certificate against the revocation list."""
        for event in list(self._open):
            event.set()

    async def _check_still_valid(self, context: grpc.aio.ServicerContext, node_id: str) -> None:
        cert = peer_certificate(context.auth_context())
        if self.auth is not None and cert is not None and self.auth.certificate_revoked(cert):
            await asyncio.to_thread(
                self._service.store.governance.audit,
                actor=node_id, event="node.stream_closed", subject=f"node:{node_id}",
                details={"reason": "certificate revoked", "serial": f"{cert.serial_number:x}"},
                now=self._service.clock(),
            )  # fmt: skip
            raise Unauthenticated(
                f"the certificate of node '{node_id}' was revoked; this stream is closed"
            )

    @rpc_method(*NODES)
    async def OpenTaskStream(
        self,
        request: agent_pb2.OpenTaskStreamRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> AsyncIterator[agent_pb2.AgentMessage]:
        node_id = identity.name
        cert = peer_certificate(context.auth_context())
        if cert is not None:
            self._service.metrics.certificate_seen("node", node_id, cert.not_valid_after_utc)
        datasets = schemas_from_pb(request.datasets)
        connection_id = str(uuid.uuid4())
        wake = self._notifier.subscribe(node_id)
        await asyncio.to_thread(
            self._service.node_connected,
            node_id,
            datasets,
            list(request.analyses),
            connection_id,
            request.paused,
            request.agent_version,
            cert.not_valid_after_utc if cert is not None else None,
        )
        # The stream's liveness is the node's heartbeat (coordinator.scheduler marks a node
        # offline after a silence): recorded once per ping interval, however busy.
        beat = sent = time.monotonic()
        # Headers now tell the agent its stream is registered (it reports itself ready),
        # rather than with the first task or ping, which may be ping_interval away.
        await context.send_initial_metadata(())
        self._open.add(wake)
        checkpoint_sent = b""
        try:
            newest = await self._newest_checkpoint(checkpoint_sent)
            if newest is not None:
                yield newest
                checkpoint_sent = newest.checkpoint.checkpoint
            while self._notifier.is_current(node_id, wake):
                wake.clear()
                await self._check_still_valid(context, node_id)
                taken = await self._dispatch.run(node_id)
                if not self._notifier.is_current(node_id, wake):
                    # A newer stream replaced this one while the tasks were being taken.
                    await asyncio.to_thread(self._service.requeue, [task for task, *_ in taken])
                    break
                for task, job, grant, signature in taken:
                    yield task_to_pb(task, job, grant, signature)
                    sent = time.monotonic()
                for task_id, reason in self._notifier.take_cancels(node_id):
                    yield agent_pb2.AgentMessage(
                        cancel=agent_pb2.CancelTask(task_id=task_id, reason=reason)
                    )
                    sent = time.monotonic()
                if time.monotonic() - beat >= self._ping_interval:
                    beat = time.monotonic()
                    await self._heartbeats.run((node_id, connection_id))
                    newest = await self._newest_checkpoint(checkpoint_sent)
                    if newest is not None:
                        yield newest
                        checkpoint_sent = newest.checkpoint.checkpoint
                        sent = time.monotonic()
                timeout = self._ping_interval - (time.monotonic() - sent)
                if self._poll_interval is not None:
                    timeout = min(timeout, self._poll_interval)
                # asyncio.timeout, not wait_for: no extra task per wait, and a cancellation
                # is never swallowed (wait_for on Python 3.11 can swallow one).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, timeout)):
                        await wake.wait()
                    continue
                if time.monotonic() - sent >= self._ping_interval:
                    yield agent_pb2.AgentMessage(ping=agent_pb2.Ping())
                    sent = time.monotonic()
        finally:
            self._open.discard(wake)
            self._notifier.unsubscribe(node_id, wake)
            # Shielded so a cancelled stream still records the disconnect; tracked so
            # shutdown can wait for it rather than destroy it half done.
            done = asyncio.ensure_future(
                asyncio.to_thread(self._service.node_disconnected, node_id, connection_id)
            )
            self._disconnecting.add(done)
            done.add_done_callback(self._disconnecting.discard)
            await asyncio.shield(done)

    async def _newest_checkpoint(self, sent: bytes) -> agent_pb2.AgentMessage | None:
        """The newest audit checkpoint as a message, unless this stream sent it already."""
        if self._checkpoints is None:
            return None
        newest = await asyncio.to_thread(self._checkpoints.newest)
        if newest is None or newest.data == sent:
            return None
        return agent_pb2.AgentMessage(
            checkpoint=agent_pb2.AuditCheckpoint(checkpoint=newest.data, signature=newest.signature)
        )

    @rpc_method(*NODES)
    async def CountersignCheckpoint(
        self,
        request: agent_pb2.CountersignCheckpointRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> agent_pb2.CountersignCheckpointResponse:
        cert = peer_certificate(context.auth_context())
        if self._checkpoints is None or cert is None:
            raise InvalidRequest("this coordinator does not publish audit checkpoints")
        pem = cert.public_bytes(serialization.Encoding.PEM)
        await asyncio.to_thread(
            self._checkpoints.countersigned,
            identity.name,
            pem,
            request.checkpoint,
            request.signature,
        )
        return agent_pb2.CountersignCheckpointResponse()

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for the disconnect bookkeeping of streams that have ended."""
        if self._disconnecting:
            await asyncio.wait(set(self._disconnecting), timeout=timeout)

    @rpc_method(*NODES)
    async def ReportResult(
        self,
        request: agent_pb2.ReportResultRequest,
        context: grpc.aio.ServicerContext,
        identity: Identity,
    ) -> agent_pb2.ReportResultResponse:
        output = output_from_parts(request.outcome, request.rules, request.payload, request.error)
        provenance = provenance_from_pb(request.provenance)
        await self._reports.run(Report(identity.name, request.task_id, output, provenance))
        # An answer frees a place in the node's in-flight window: send it the next task
        # (its stream is on this replica: its reports come over the same channel).
        self._notifier.wake_local([identity.name])
        return agent_pb2.ReportResultResponse()
