"""The servicer wrapper: role checks, and fedtre errors turned into gRPC statuses."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import grpc

from fedtre.errors import FedtreError, PermissionDenied
from fedtre.identity.peer import Identity, identity_from_auth_context
from fedtre.status import status_for

logger = logging.getLogger(__name__)


def authorize(context: grpc.aio.ServicerContext, roles: Collection[str]) -> Identity:
    """Return the caller's certificate identity; raise unless it holds one of roles."""
    identity = identity_from_auth_context(context.auth_context())
    if identity.role not in roles:
        raise PermissionDenied(
            f"'{identity.name}' has role '{identity.role}'; this call needs one of {sorted(roles)}"
        )
    return identity


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, FedtreError):
        await context.abort(status_for(exc), str(exc))
    logger.exception("unexpected error in %s", method, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL, "internal error; the coordinator's log has details"
    )


def rpc_method(*roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a servicer method: check the caller's role, pass its Identity, map errors to statuses.

    Works for unary methods and for server-streaming (async generator) methods.
    """

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        name = method.__name__
        if inspect.isasyncgenfunction(method):

            @functools.wraps(method)
            async def stream(
                self: Any, request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                try:
                    identity = authorize(context, roles)
                    async for item in method(self, request, context, identity):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort(context, exc, name)

            return stream

        @functools.wraps(method)
        async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                identity = authorize(context, roles)
                return await method(self, request, context, identity)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, exc, name)

        return unary

    return decorate
