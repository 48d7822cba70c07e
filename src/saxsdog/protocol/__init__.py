"""The saxsdog network protocol: signed leash requests, responses, network file, client.

* :mod:`~saxsdog.protocol.signing` — canonical JSON, HMAC-SHA256 envelopes, replay cache;
* :mod:`~saxsdog.protocol.commands` — the command table (names, aliases, results, argument
  schemas, where the server runs each, how ``saxsleash`` offers it);
* :mod:`~saxsdog.protocol.messages` — JSON Schema checks, the multipart wire format;
* :mod:`~saxsdog.protocol.netconf` — the network file ``~/.saxsdognetwork``;
* :mod:`~saxsdog.protocol.client` — :class:`LeashClient` (imports ZeroMQ, loaded lazily).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .messages import (COMMAND_ALIASES, COMMANDS, EMPTY_RESULT, ERROR_RESULT, MAX_MESSAGE_BYTES,
                       PENDING_RESULT, RESULTS, STAT_KEYS, ProtocolError, canonical_command,
                       decode_request, decode_response, encode_request, encode_response,
                       error_response, ok_response, shorten, validate_argument, validate_envelope,
                       validate_request, validate_response)
from .netconf import (NetworkConfigError, add_network_arguments, load_network, select_server,
                      write_network)
from .signing import AuthError, ReplayCache, canonical_json, sign_request, verify_request

_LAZY = {"LeashClient": "saxsdog.protocol.client", "ServerError": "saxsdog.protocol.client",
         "raise_for_error": "saxsdog.protocol.client"}

__all__ = [
    "AuthError", "ReplayCache", "canonical_json", "sign_request", "verify_request",
    "ProtocolError", "COMMANDS", "COMMAND_ALIASES", "RESULTS", "ERROR_RESULT", "EMPTY_RESULT",
    "STAT_KEYS", "MAX_MESSAGE_BYTES", "PENDING_RESULT", "canonical_command", "validate_request",
    "validate_envelope", "validate_argument", "shorten", "validate_response", "error_response", "ok_response", "encode_request", "decode_request",
    "encode_response", "decode_response",
    "NetworkConfigError", "load_network", "select_server", "write_network",
    "add_network_arguments",
] + sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'saxsdog.protocol' has no attribute {name!r}")
    return getattr(import_module(module), name)
