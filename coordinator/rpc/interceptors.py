"""Server interceptors: every gRPC call counted by method and status code; credentials
refused again and again from one peer refused at once (coordinator.refusals)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from coordinator.auth import Authenticator
from coordinator.metrics import CoordinatorMetrics
from coordinator.refusals import REPEATED_CREDENTIALS, credential_key

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Records fedtre_grpc_requests_total{method, code} and unary call durations.

    Only registered methods are counted (an unknown method has no handler), so the
    method label is bounded by the services the coordinator serves.
    """

    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        return _wrap(
            handler,
            lambda b, streaming: self._unary(method, b, timed=not streaming),
            lambda b: self._stream(method, b),
        )

    def _unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]], timed: bool
    ) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await behavior(request, context)
                code = _final_code(context)
                return response
            except grpc.aio.AbortError:
                code = _final_code(context, grpc.StatusCode.UNKNOWN)
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                elapsed = time.perf_counter() - started if timed else None
                self._metrics.grpc_call(method, code.name, elapsed)

        return call

    def _stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            code = grpc.StatusCode.UNKNOWN
            responses = behavior(request, context)
            try:
                async for response in responses:
                    yield response
                code = _final_code(context)
            except grpc.aio.AbortError:
                code = _final_code(context, grpc.StatusCode.UNKNOWN)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                # Close the servicer's generator now, so its clean-up (a node marked
                # offline) runs when the stream ends rather than when it is collected.
                await responses.aclose()  # type: ignore[attr-defined]
                self._metrics.grpc_call(method, code.name, None)

        return call


def _final_code(
    context: grpc.aio.ServicerContext, default: grpc.StatusCode = grpc.StatusCode.OK
) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        # Some grpc versions report the raw integer of the status.
        return next((c for c in grpc.StatusCode if c.value[0] == code), default)
    return default


class RefusalInterceptor(grpc.aio.ServerInterceptor):
    """Refuses at once, with no database work, credentials the peer had refused too often.

    The Authenticator's RefusalGuard decides (coordinator.refusals); this only asks it
    before a call runs, so a flood of refused calls costs a dictionary lookup each.
    """

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method.rsplit("/", 1)[-1]
        return _wrap(
            handler,
            lambda b, streaming: self._unary(method, b),
            lambda b: self._stream(method, b),
        )

    async def _refuse_if_blocked(self, method: str, context: grpc.aio.ServicerContext) -> None:
        blocked = self._auth.blocked(
            context.peer() or "",
            credential_key(tuple(context.invocation_metadata() or ()), context.auth_context()),
            method,
        )
        if blocked is None:
            return
        if blocked.reason == REPEATED_CREDENTIALS:
            what = "these credentials were refused repeatedly from this address; calls with them"
        else:
            what = (
                "too many calls from this address were refused; calls with credentials not "
                "seen to work from it recently"
            )
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"{what} are refused unchecked for the next {blocked.seconds:.0f} s. Check the "
            "token file or certificate (an admin issues a new token with `fedtre tokens issue`)",
        )

    def _unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._refuse_if_blocked(method, context)
            return await behavior(request, context)

        return call

    def _stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._refuse_if_blocked(method, context)
            responses = behavior(request, context)
            try:
                async for response in responses:
                    yield response
            finally:
                await responses.aclose()  # type: ignore[attr-defined]

        return call


def _wrap(
    handler: grpc.RpcMethodHandler | None,
    unary: Callable[[Callable[..., Awaitable[Any]], bool], Callable[..., Awaitable[Any]]],
    stream: Callable[[Callable[..., AsyncIterator[Any]]], Callable[..., AsyncIterator[Any]]],
) -> grpc.RpcMethodHandler | None:
    """Return handler with its behaviour wrapped by unary(behavior, response_streaming) or
    stream(behavior) (an async generator), keeping its (de)serialisers."""
    if handler is None:
        return handler
    for kind in _KINDS:
        behavior = getattr(handler, kind)
        if behavior is None:
            continue
        if inspect.isasyncgenfunction(behavior):
            wrapped: Callable[..., Any] = stream(behavior)
        elif inspect.iscoroutinefunction(behavior):
            wrapped = unary(behavior, handler.response_streaming)
        else:
            return handler  # a synchronous handler: not used by this server
        return _FACTORIES[kind](
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler
