"""The one table between fedtre errors and gRPC status codes, read in both directions."""

from __future__ import annotations

import grpc

from fedtre.errors import (
    Conflict,
    DisclosureBlocked,
    FedtreError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

# Most specific first: NotFound is an InvalidRequest.
STATUS_BY_ERROR: tuple[tuple[type[FedtreError], grpc.StatusCode], ...] = (
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (DisclosureBlocked, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)
_ERROR_BY_STATUS = {code: error for error, code in reversed(STATUS_BY_ERROR)}
_ERROR_BY_STATUS[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable


def status_for(exc: FedtreError) -> grpc.StatusCode:
    """The status code a server answers with for exc."""
    for error_type, code in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def error_from_rpc(exc: grpc.RpcError) -> FedtreError:
    """The fedtre error a client raises for a failed call, carrying the server's message."""
    code = exc.code()  # type: ignore[attr-defined]
    details = exc.details() or ""  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(
            f"cannot reach the coordinator ({details}); is it running, and is the address right?"
        )
    return _ERROR_BY_STATUS.get(code, FedtreError)(details or f"the call failed with {code.name}")
