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

# The names are imported lazily: ``saxsdog --help`` imports ``saxsdog.protocol.netconf`` for its
# network options, and must not pay for the messages' schemas, the command table and the
# replay cache's sqlite3 (the command's start-up).
_SUBMODULE_NAMES = {
    "saxsdog.protocol.messages": (
        "COMMAND_ALIASES", "COMMANDS", "EMPTY_RESULT", "ERROR_RESULT", "MAX_MESSAGE_BYTES", "PENDING_RESULT",
        "RESULTS", "STAT_KEYS", "ProtocolError", "canonical_command", "decode_request", "decode_response",
        "encode_request", "encode_response", "error_response", "ok_response", "shorten", "validate_argument",
        "validate_envelope", "validate_request", "validate_response"),
    "saxsdog.protocol.netconf": (
        "NetworkConfigError", "add_network_arguments", "load_network", "select_server", "write_network"),
    "saxsdog.protocol.signing": ("AuthError", "ReplayCache", "canonical_json", "sign_request", "verify_request"),
    "saxsdog.protocol.client": ("LeashClient", "ServerError", "raise_for_error"),
}
_LAZY = {name: module for module, names in _SUBMODULE_NAMES.items() for name in names}

__all__ = [
    "AuthError", "ReplayCache", "canonical_json", "sign_request", "verify_request",
    "ProtocolError", "COMMANDS", "COMMAND_ALIASES", "RESULTS", "ERROR_RESULT", "EMPTY_RESULT",
    "STAT_KEYS", "MAX_MESSAGE_BYTES", "PENDING_RESULT", "canonical_command", "validate_request",
    "validate_envelope", "validate_argument", "shorten", "validate_response", "error_response", "ok_response", "encode_request", "decode_request",
    "encode_response", "decode_response",
    "NetworkConfigError", "load_network", "select_server", "write_network",
    "add_network_arguments",
    "LeashClient", "ServerError", "raise_for_error",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'saxsdog.protocol' has no attribute {name!r}")
    return getattr(import_module(module), name)
