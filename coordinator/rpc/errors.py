"""The servicer wrapper: role checks, and fedtre errors turned into gRPC statuses."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import grpc

from coordinator.auth import CallInfo
from coordinator.rpc.convert import check_well_known
from coordinator.rpc.registration import Undecodable
from fedtre.errors import FedtreError, InvalidRequest, PermissionDenied
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


async def authenticate(
    servicer: Any, context: grpc.aio.ServicerContext, roles: Collection[str], method: str
) -> Identity:
    """Return the caller's Identity, checked to hold one of roles.

    With the servicer's Authenticator (its `auth` attribute, coordinator.auth): agents by
    their certificate (checked against the revocation list), people by their API token.
    Without one, certificate roles only.
    """
    auth = getattr(servicer, "auth", None)
    if auth is None:
        return authorize(context, roles)
    call = call_info(context, method)
    if "node" in roles:
        identity, _ = auth.node(call, roles)
        return identity
    return await asyncio.to_thread(auth.person, call, roles)  # type: ignore[no-any-return]


def call_info(context: grpc.aio.ServicerContext, method: str) -> CallInfo:
    """What the Authenticator sees of a call."""
    return CallInfo(
        method=method,
        peer=context.peer() or "",
        metadata=tuple(context.invocation_metadata() or ()),
        auth_context=context.auth_context(),
    )


def _require_decoded(request: Any) -> None:
    """Raise InvalidRequest for undecodable bytes, or a Timestamp or Struct out of range."""
    if isinstance(request, Undecodable):
        raise InvalidRequest(
            f"the request is not a valid {request.type_name} message (corrupt or nested "
            "too deeply); send it with the fedtre client or the generated fedtre.v1 code"
        )
    check_well_known(request)


# Status details travel percent-encoded in metadata, which clients refuse past 8 KiB in
# all; messages can quote the caller's own (possibly huge) input, so they are cut to a
# budget of encoded bytes.
MAX_DETAILS_BYTES = 6000


def public_message(exc: FedtreError) -> str:
    """The error's message, cut so that its encoded form fits in a status."""
    message = str(exc)
    spent = 0
    for i, char in enumerate(message):
        spent += 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode())
        if spent > MAX_DETAILS_BYTES:
            return message[:i] + " ... (message truncated)"
    return message


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, FedtreError):
        await context.abort(status_for(exc), public_message(exc))
    logger.exception("unexpected error in %s", method, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL, "internal error; the coordinator's log has details"
    )


async def _audit_node_refusal(
    servicer: Any,
    context: grpc.aio.ServicerContext,
    method: str,
    identity: Identity,
    request: Any,
    exc: PermissionDenied,
) -> None:
    """Audit a node refused after authentication (e.g. reporting another node's task)."""
    auth = getattr(servicer, "auth", None)
    if auth is None:
        return
    task_id = getattr(request, "task_id", "")
    await asyncio.to_thread(
        auth.refused,
        call_info(context, method),
        identity.name,
        str(exc),
        f"task:{task_id}" if task_id else "",
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
                    identity = await authenticate(self, context, roles, name)
                    _require_decoded(request)
                    async for item in method(self, request, context, identity):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort(context, exc, name)

            return stream

        @functools.wraps(method)
        async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            identity: Identity | None = None
            try:
                identity = await authenticate(self, context, roles, name)
                _require_decoded(request)
                return await method(self, request, context, identity)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                if identity is not None and "node" in roles and isinstance(exc, PermissionDenied):
                    await _audit_node_refusal(self, context, name, identity, request, exc)
                await _abort(context, exc, name)

        return unary

    return decorate
