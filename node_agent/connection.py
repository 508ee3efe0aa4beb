"""The agent's outbound link: open the task stream, run tasks, report results, reconnect."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf import json_format

from fedtre.analyses.base import DatasetSchema, NodeOutput
from fedtre.disclosure import release
from fedtre.errors import Unavailable
from fedtre.identity.diagnose import diagnose
from fedtre.identity.provenance import Provenance
from fedtre.v1 import agent_pb2, agent_pb2_grpc, applications_pb2, applications_pb2_grpc
from fedtre.wire import (
    OUTCOME_TO_PB,
    dict_to_struct,
    provenance_to_pb,
    rules_to_pb,
    schema_to_pb,
    struct_to_dict,
)
from node_agent.credentials import ReloadingCredentials
from node_agent.task import TaskSpec

logger = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
REPORT_TIMEOUT_S = 30.0

# Worth retrying: the link or the coordinator is down, not the request wrong.
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Backoff:
    """Exponential backoff with full jitter, reset after a healthy connection."""

    def __init__(
        self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
    ) -> None:
        self.base, self.cap = base, cap
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 16)
        return self._rng.uniform(0, delay)

    def reset(self) -> None:
        self._attempt = 0


def task_from_pb(task: agent_pb2.Task) -> TaskSpec:
    return TaskSpec(
        task_id=task.task_id,
        job_id=task.job_id,
        node=task.node,
        analysis=task.analysis,
        dataset=task.dataset,
        params=struct_to_dict(task.params),
        project=task.project,
        grant=task.grant,
        signature=task.signature,
        round=struct_to_dict(task.round) if task.HasField("round") else None,
    )


def report_from_output(task_id: str, output: NodeOutput) -> agent_pb2.ReportResultRequest:
    """The report of output as it may leave: rules in fixed words (release.public_output)."""
    output = release.public_output(output)
    return agent_pb2.ReportResultRequest(
        task_id=task_id,
        outcome=OUTCOME_TO_PB[output.outcome],
        rules=rules_to_pb(output),
        payload=dict_to_struct(output.payload),
        error=output.error,
    )


def parse_targets(target: str) -> list[str]:
    """The coordinator addresses in target: one host:port, or several comma-separated."""
    return [one.strip() for one in target.split(",") if one.strip()]


class AgentConnection:
    """Keeps one task stream open to the coordinator until stop() is called.

    target may name several coordinator replicas, comma-separated: after a lost stream
    the agent reconnects to the next one in turn (each serves any node).
    """

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | ReloadingCredentials,
        datasets: Sequence[DatasetSchema],
        analyses: Sequence[str],
        run_task: Callable[[TaskSpec], NodeOutput],
        *,
        channel_options: Sequence[tuple[str, object]] = (),
        workers: int = 2,
        on_reconnect: Callable[[], None] | None = None,
        paused: Callable[[], bool] | None = None,
        on_cancel: Callable[[str, str], None] | None = None,
        sign_result: Callable[[str, NodeOutput], Provenance | None] | None = None,
        witness: Callable[[bytes, bytes], bytes | None] | None = None,
    ) -> None:
        """workers: the most tasks this agent runs at once (its concurrency limit).
        paused: whether the TRE has paused this agent (asked at each (re)connection).
        on_cancel: called with (task id, reason) when the coordinator cancels a task.
        witness: given an audit checkpoint's bytes and signature, returns this agent's
        countersignature, or None (node_agent.checkpoints).
        """
        self._witness = witness
        # With ReloadingCredentials, a renewed certificate is picked up on reconnect.
        self._source = credentials if isinstance(credentials, ReloadingCredentials) else None
        self._targets, self._options = parse_targets(target), list(channel_options)
        self._next_target = 0
        self._target = self._targets[0]
        self._credentials = credentials
        current = self._source.credentials if self._source is not None else credentials
        self._channel = grpc.secure_channel(self._target, current, options=self._options)
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        # Replaced channels, each with when (time.monotonic()) it was replaced.
        self._retired: list[tuple[float, grpc.Channel]] = []
        self._open_request = agent_pb2.OpenTaskStreamRequest(
            agent_version=AGENT_VERSION,
            datasets=[schema_to_pb(d) for d in datasets],
            analyses=list(analyses),
        )
        self._run_task = run_task
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task")
        self._stopping = threading.Event()
        self._call: grpc.Future | None = None
        self._lock = threading.Lock()
        self._on_reconnect = on_reconnect
        self._paused = paused or (lambda: False)
        self._on_cancel = on_cancel
        # Set by reopen(): the stream ends on purpose and is opened again at once.
        self._reopen = threading.Event()
        # Signs each released output's provenance (node_agent.provenance) as it is reported.
        self._sign_result = sign_result
        self.connected = threading.Event()
        # The last cause of failure logged (fedtre.identity.diagnose): each is said once.
        self._said_why: str | None = None

    def run(self) -> None:
        """Hold the stream open, reconnecting with backoff, until stop()."""
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                self._refresh_channel()
                self._stream_once(backoff)
            except grpc.RpcError as exc:
                code = exc.code()
                if self._stopping.is_set():
                    break
                if self._reopen.is_set() and code == grpc.StatusCode.CANCELLED:
                    continue
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    logger.error("coordinator refused this agent: %s", exc.details())
                else:
                    logger.warning("task stream lost: %s", code.name if code else exc)
                if code == grpc.StatusCode.UNAVAILABLE:
                    self._explain_unavailable()
            self.connected.clear()
            if self._stopping.is_set():
                break
            if self._reopen.is_set():
                self._reopen.clear()
                continue
            if self._on_reconnect is not None:
                self._on_reconnect()
            self._fail_over()
            delay = backoff.next_delay()
            logger.info("reconnecting", extra={"delay_s": round(delay, 2)})
            self._stopping.wait(delay)

    def _explain_unavailable(self) -> None:
        """Log why the coordinator cannot be reached and what to do, once per cause."""
        if self._source is None:
            return
        files = self._source.files
        why = diagnose(self._target, files.ca, cert=files.cert, key=files.key)
        if why is not None and why != self._said_why:
            logger.error("%s", why, extra={"coordinator": self._target})
        self._said_why = why

    def reopen(self) -> None:
        """Open the task stream again now (e.g. to tell the coordinator of a pause)."""
        self._reopen.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    def _stream_once(self, backoff: Backoff) -> None:
        request = agent_pb2.OpenTaskStreamRequest()
        request.CopyFrom(self._open_request)
        request.paused = self._paused()
        call = self._stub.OpenTaskStream(request)
        with self._lock:
            self._call = call
        if self._stopping.is_set():
            call.cancel()
        # The coordinator sends its headers once it has registered this node (a failed
        # or cancelled call ends the wait as well): from then on the stream is up.
        call.initial_metadata()
        if not call.done():
            self.connected.set()
            self._said_why = None
            if self._source is not None:
                logger.info(
                    "connected to %s as %s",
                    self._target,
                    self._source.node_id,
                    extra={"coordinator": self._target, "node_id": self._source.node_id},
                )
                self._source.warn_if_expiring()
        for message in call:
            backoff.reset()
            self.connected.set()
            if message.HasField("task"):
                self._pool.submit(self._handle, message.task)
            elif message.HasField("cancel") and self._on_cancel is not None:
                self._on_cancel(message.cancel.task_id, message.cancel.reason)
            elif message.HasField("checkpoint") and self._witness is not None:
                self._pool.submit(self._countersign, message.checkpoint)
            if self._source is not None and self._source.changed():
                logger.info("certificate files changed; reconnecting with them")
                call.cancel()
                return
        logger.warning("coordinator closed the task stream")

    def _fail_over(self) -> None:
        """Dial the next coordinator replica from now on (nothing to do with only one)."""
        if len(self._targets) < 2:
            return
        self._next_target = (self._next_target + 1) % len(self._targets)
        self._target = self._targets[self._next_target]
        current = self._source.credentials if self._source is not None else self._credentials
        assert isinstance(current, grpc.ChannelCredentials)
        channel = grpc.secure_channel(self._target, current, options=self._options)
        logger.info("moving to another coordinator", extra={"coordinator": self._target})
        with self._lock:
            # A report may be in flight on the old channel: retire it, and close it once
            # no report can still be (or at stop()); reports retried go to the new one.
            self._retire(self._channel)
            self._channel = channel
            self._stub = agent_pb2_grpc.AgentServiceStub(channel)

    def _retire(self, channel: grpc.Channel) -> None:
        """Keep channel open for reports in flight; close those retired long enough ago."""
        now = time.monotonic()
        keep = []
        for since, old in self._retired:
            if now - since > 2 * REPORT_TIMEOUT_S:
                old.close()
            else:
                keep.append((since, old))
        self._retired = [*keep, (now, channel)]

    def _refresh_channel(self) -> None:
        """Open a new channel when the certificate files changed (rotation, no restart)."""
        if self._source is None or not self._source.reload():
            return
        channel = grpc.secure_channel(self._target, self._source.credentials, options=self._options)
        with self._lock:
            # The old channel may carry a report in flight: retire it, close it at stop().
            self._retire(self._channel)
            self._channel = channel
            self._stub = agent_pb2_grpc.AgentServiceStub(channel)

    def _handle(self, task: agent_pb2.Task) -> None:
        # Runs on the pool, whose futures nobody reads: log here or the failure is silent.
        try:
            spec = task_from_pb(task)
            output = self._run_task(spec)
            self._report(spec.task_id, output)
        except Exception:
            logger.exception("task could not be run or reported", extra={"task_id": task.task_id})

    def project_application(self, project: str) -> dict[str, Any] | None:
        """The approved Data Access Request behind project, as a dict; None when the
        project has none (an admin created it). Raises Unavailable when it cannot be asked."""
        stub = applications_pb2_grpc.ApplicationServiceStub(self._channel)
        request = applications_pb2.GetProjectApplicationRequest(project=project)
        try:
            response = stub.GetProjectApplication(request, timeout=REPORT_TIMEOUT_S)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise Unavailable(f"cannot ask for the application of project {project!r}") from None
        return json_format.MessageToDict(response.application, preserving_proto_field_name=True)

    def _countersign(self, checkpoint: agent_pb2.AuditCheckpoint) -> None:
        # Runs on the pool, whose futures nobody reads: log here or the failure is silent.
        assert self._witness is not None
        try:
            signature = self._witness(checkpoint.checkpoint, checkpoint.signature)
            if signature is not None:
                request = agent_pb2.CountersignCheckpointRequest(
                    checkpoint=checkpoint.checkpoint, signature=signature
                )
                self._stub.CountersignCheckpoint(request, timeout=REPORT_TIMEOUT_S)
        except grpc.RpcError as exc:
            logger.warning("countersignature not delivered: %s", exc.code().name)
        except Exception:
            logger.exception("audit checkpoint could not be countersigned")

    def report(self, task_id: str, output: NodeOutput) -> bool:
        """Report a task's output, retrying while the link is down (the airlock's reporter).

        Returns True once the coordinator took it or refused it for good, False when the
        agent stopped first (report it again after the restart).
        """
        return self._report(task_id, output)

    def _report(self, task_id: str, output: NodeOutput) -> bool:
        # The output is already in the agent's state; if the report cannot get through,
        # the coordinator redelivers the task after reconnecting and the stored output
        # is sent again, never recomputed.
        request = report_from_output(task_id, output)
        signed = self._sign_result(task_id, output) if self._sign_result is not None else None
        if signed is not None:
            request.provenance.CopyFrom(provenance_to_pb(signed))
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                self._stub.ReportResult(request, timeout=REPORT_TIMEOUT_S)
                return True
            except grpc.RpcError as exc:
                if exc.code() not in _TRANSIENT:
                    logger.error("result refused: %s", exc.details(), extra={"task_id": task_id})
                    return True
            self._stopping.wait(backoff.next_delay())
        return False

    def stop(self) -> None:
        """Stop streaming; tasks already running finish and report (bounded by REPORT_TIMEOUT_S)."""
        self._stopping.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for _, channel in self._retired:
            channel.close()
        self._channel.close()
