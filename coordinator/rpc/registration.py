"""Registering servicers so that undecodable request bytes become INVALID_ARGUMENT.

The generated add_*_to_server functions deserialise with Message.FromString; corrupt or
over-deep bytes then raise inside gRPC and the caller gets UNKNOWN with a Python error
text. Here a failed decode yields an Undecodable marker that rpc_method turns into a
clear INVALID_ARGUMENT after the caller has been authenticated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request whose bytes are not a valid message of its type."""

    type_name: str


def _safe_parser(parse: Callable[[bytes], Any], type_name: str) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except (DecodeError, RecursionError):
            return Undecodable(type_name)

    return deserialize


def add_servicer(server: grpc.aio.Server, service: ServiceDescriptor, servicer: Any) -> None:
    """Serve every method of service from the same-named methods of servicer."""
    handlers = {}
    for method in service.methods:
        request = GetMessageClass(method.input_type)
        response = GetMessageClass(method.output_type)
        if method.client_streaming:
            raise NotImplementedError("no fedtre RPC streams requests")
        factory = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=_safe_parser(request.FromString, method.input_type.full_name),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
