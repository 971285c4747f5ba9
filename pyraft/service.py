"""Answers client-protocol requests (the fast path on the raft port) with a RaftNode."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from pyraft.actors.applier import Applied
from pyraft.actors.node import OutcomeUnknown, RaftNode
from pyraft.core.errors import NoLeader, NotLeader, RaftError, RequestLost, TransferInProgress
from pyraft.statemachine import CommandError
from pyraft.wire.client_protocol import (
    BAD_REQUEST,
    LOST,
    NO_LEADER,
    NOT_LEADER,
    OP_PROPOSE,
    OP_READ,
    TIMEOUT,
    ClientRequest,
    ClientResponse,
)

DEFAULT_REQUEST_TIMEOUT = 5.0


class NodeClientHandler:
    def __init__(self, node: RaftNode, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.node = node
        self.timeout = timeout

    async def __call__(self, request: ClientRequest) -> ClientResponse:
        rid = request.request_id
        try:
            with trio.fail_after(self.timeout):
                if request.op == OP_PROPOSE:
                    applied = await self.node.propose(request.data)
                    return ClientResponse(rid, True, applied.result, applied.index)
                if request.op == OP_READ:
                    return ClientResponse(rid, True, await self.node.read(request.data))
            return ClientResponse.failure(rid, BAD_REQUEST)
        except trio.TooSlowError:
            return ClientResponse.failure(rid, TIMEOUT)
        except RaftError as exc:
            return ClientResponse.failure(rid, *error_code(exc))
        except CommandError:
            return ClientResponse.failure(rid, BAD_REQUEST)

    async def handle_batch(self, requests: Sequence[ClientRequest]) -> list[ClientResponse]:
        """Proposals that arrived together: one trip through the raft loop, one deadline for all.
        Commands settled before the deadline are answered with their outcome, the rest "timeout"."""
        outcomes: list[Applied | Exception | None] = [None] * len(requests)
        with trio.move_on_after(self.timeout):
            await self.node.propose_many([r.data for r in requests], outcomes)
        return [_response(r.request_id, outcome) for r, outcome in zip(requests, outcomes, strict=True)]


def _response(request_id: int, outcome: Applied | Exception | None) -> ClientResponse:
    if isinstance(outcome, Applied):
        return ClientResponse(request_id, True, outcome.result, outcome.index)
    if isinstance(outcome, RaftError):
        return ClientResponse.failure(request_id, *error_code(outcome))
    if isinstance(outcome, CommandError):
        return ClientResponse.failure(request_id, BAD_REQUEST)
    if outcome is None:
        return ClientResponse.failure(request_id, TIMEOUT)
    raise outcome


def error_code(exc: RaftError) -> tuple[str, int | None]:
    """The client-protocol code for an engine error, with a leader hint where known."""
    if isinstance(exc, NoLeader):
        return NO_LEADER, None
    if isinstance(exc, NotLeader):
        return NOT_LEADER, exc.leader_id
    if isinstance(exc, TransferInProgress):
        return NO_LEADER, None
    if isinstance(exc, OutcomeUnknown):
        return TIMEOUT, None
    if isinstance(exc, RequestLost):
        return LOST, None
    return LOST, None
