"""Requests a client sends to any node and the answers it gets back.

Responses are tagged with the request id, so a connection can carry many
requests at once and answer them in any order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

OP_PROPOSE: Final = "propose"
OP_READ: Final = "read"
OPS: Final = frozenset({OP_PROPOSE, OP_READ})

# Error codes in ClientResponse.error. The client retries a proposal only on the
# codes in DEFINITELY_NOT_APPLIED: every other failure leaves its outcome unknown.
NOT_LEADER: Final = "not_leader"
NO_LEADER: Final = "no_leader"
TIMEOUT: Final = "timeout"
LOST: Final = "lost"
BAD_REQUEST: Final = "bad_request"
SHUTTING_DOWN: Final = "shutting_down"
ERROR_CODES: Final = frozenset({NOT_LEADER, NO_LEADER, TIMEOUT, LOST, BAD_REQUEST, SHUTTING_DOWN})
DEFINITELY_NOT_APPLIED: Final = frozenset({NOT_LEADER, NO_LEADER, LOST, SHUTTING_DOWN})


@dataclass(frozen=True, slots=True)
class ClientRequest:
    request_id: int
    op: str  # OP_PROPOSE or OP_READ
    data: bytes


@dataclass(frozen=True, slots=True)
class ClientResponse:
    """``index`` is the log index a proposal was committed at (0 for reads and failures);
    ``error`` is "" on success; ``leader_hint`` accompanies "not_leader" when known."""

    request_id: int
    ok: bool
    result: bytes = b""
    index: int = 0
    error: str = ""
    leader_hint: int | None = None

    @staticmethod
    def failure(request_id: int, error: str, leader_hint: int | None = None) -> ClientResponse:
        return ClientResponse(request_id, False, b"", 0, error, leader_hint)
