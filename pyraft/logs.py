"""Structured log lines: every line carries the node id, its term and its role.

An operator grepping one node's log (or a log shipper reading JSON) should not
have to reconstruct which term a line belongs to from earlier lines, so a
``logging.Filter`` on the handler stamps the node's current state on every
record, whichever logger wrote it. ``ObservedEventLog`` is the event log of the
API whose ``record`` also writes one log line and counts the event, so the
``/events`` ring, the log and the metrics are fed by the same calls.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from pyraft.metadata.events import LEADER_CHANGED, Event, EventLog

if TYPE_CHECKING:
    from pyraft.actors.node import RaftNode
    from pyraft.metrics import NodeMetrics

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s node=%(node_id)s term=%(term)s role=%(role)s %(name)s: %(message)s"
event_log = logging.getLogger("pyraft.events")


class NodeContext(logging.Filter):
    """Stamps ``node_id``, ``term`` and ``role`` on each record (``-`` until the node exists)."""

    def __init__(self, node_id: int) -> None:
        super().__init__()
        self.node_id = node_id
        self.node: RaftNode | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.node_id = self.node_id
        if self.node is None:
            record.term, record.role = "-", "-"
        else:
            status = self.node.status()
            record.term, record.role = status["term"], status["role"]
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an event's fields go under ``event`` and ``detail``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "node": getattr(record, "node_id", None),
            "term": getattr(record, "term", None),
            "role": getattr(record, "role", None),
            "message": record.getMessage(),
        }
        for key in ("event", "detail"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, fmt: str, context: NodeContext) -> None:
    """Send every logger's records to stderr in ``fmt`` (text or json), stamped by ``context``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(context)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
        formatter.converter = time.localtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class ObservedEventLog(EventLog):
    """The event ring that also logs each event as one line and counts it in the metrics."""

    def __init__(self, metrics: NodeMetrics | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    def record(self, kind: str, **detail: Any) -> Event:
        event = super().record(kind, **detail)
        fields = " ".join(f"{k}={v}" for k, v in detail.items())
        event_log.info("event %s %s", kind, fields, extra={"event": kind, "detail": detail})
        if self.metrics is not None:
            self.metrics.events.labels(kind).inc()
            if kind == LEADER_CHANGED and detail.get("leaderId") is not None:
                self.metrics.leader_changes.inc()
        return event
