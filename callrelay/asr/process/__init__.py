"""A speech engine in a process of its own, so that recognition never shares the relay's GIL.

The relay process keeps everything about calls (each track's queue, lag, skipping, events);
only the engine and its recognisers live in the child, at a lower OS priority. Under a full CPU
it is transcripts that wait, never audio frames. The two talk over a pipe (`messages.py`): each
recogniser call is a request with a reply; the child's log lines come back over the same pipe
into the relay's log. `relay_side.py` is the engine the relay holds (`link.py` its connections
to the processes, `batches.py` what it sends, `remote_recogniser.py` its recognisers),
`child.py` the process, `shared.py` the processes several server processes share (`ASR_PROCESSES`).
"""

from callrelay.asr.process.relay_side import (
    EngineState,
    ProcessSpeechEngine,
    connect_engine_process,
    start_engine_process,
)
from callrelay.asr.process.remote_recogniser import (
    EngineProcessGone,
    RecogniserError,
    RemoteRecogniser,
)

__all__ = [
    "EngineProcessGone",
    "EngineState",
    "ProcessSpeechEngine",
    "RecogniserError",
    "RemoteRecogniser",
    "connect_engine_process",
    "start_engine_process",
]
