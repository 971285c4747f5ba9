"""KRaft-style cluster metadata: typed records, the commands a log entry holds, and the store.

``records`` holds Kafka's metadata records and their msgpack codec, ``commands``
the log-entry envelope, the apply Outcome and the record builders, ``store`` the
deterministic state machine the Raft log is applied to.
"""

from pyraft.metadata.commands import (
    MetadataCommand,
    Outcome,
    decode_command,
    decode_outcome,
    encode_command,
    encode_outcome,
)
from pyraft.metadata.records import Record, RecordError
from pyraft.metadata.store import MetadataStore, replay

__all__ = [
    "MetadataCommand",
    "MetadataStore",
    "Outcome",
    "Record",
    "RecordError",
    "decode_command",
    "decode_outcome",
    "encode_command",
    "encode_outcome",
    "replay",
]
