"""Server interceptors: every gRPC call counted by method and status code."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from coordinator.metrics import CoordinatorMetrics

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
        if handler is None:
            return handler
        method = handler_call_details.method
        for kind in _KINDS:
            behavior = getattr(handler, kind)
            if behavior is None:
                continue
            if inspect.isasyncgenfunction(behavior):
                wrapped: Callable[..., Any] = self._stream(method, behavior)
            elif inspect.iscoroutinefunction(behavior):
                wrapped = self._unary(method, behavior, timed=not handler.response_streaming)
            else:
                return handler  # a synchronous handler: not used by this server
            return _FACTORIES[kind](
                wrapped,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

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
