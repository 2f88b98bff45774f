"""A guard against a race in Streamlit's file uploader that silently loses an upload on a busy server.

The uploader first asks the server for upload URLs over the websocket (a file_urls_request); the
server queues its answer (file_urls_response) for the browser. If a script run of the same session
starts before that queue is sent (say, the run for the body site chosen a moment before the upload),
AppSession clears the queue, keeping only lifecycle messages (streamlit/runtime/forward_msg_queue.py,
`ForwardMsgQueue.clear(retain_lifecycle_msgs=True)`, Streamlit 1.67): the answer is dropped, the
browser waits for it for ever, and the uploader stays empty, with no message. The window is a few
milliseconds on an idle server and grows when the CPU is busy: `bench/load_app.py` lost 5 of 239
uploads at 8 sessions on 2 cores before this guard.

`keep_upload_answers()` makes that clear keep file_urls_response messages as well (the answer belongs
to no script run, so no rerun can make it stale), and logs each one it keeps. app.py installs it once
per server process.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

log = logging.getLogger(__name__)

KEPT = "file_urls_response"
#: What the server log says each time the guard keeps an answer (bench/load_app.py counts these lines).
KEPT_MESSAGE = "kept an upload's file URLs that a starting script run would have dropped"


def keep_upload_answers() -> None:
    """Wrap ForwardMsgQueue.clear so that a clear which keeps lifecycle messages keeps pending
    file_urls_response messages too. Idempotent."""
    original = ForwardMsgQueue.clear
    if getattr(original, "keeps_upload_answers", False):
        return

    @functools.wraps(original)
    def clear(self: ForwardMsgQueue, retain_lifecycle_msgs: bool = False, *args: Any, **kwargs: Any) -> None:
        answers = [m for m in self._queue if m.WhichOneof("type") == KEPT] if retain_lifecycle_msgs else []
        original(self, retain_lifecycle_msgs, *args, **kwargs)
        if answers:
            self._queue.extend(answers)
            log.warning("%s (%d)", KEPT_MESSAGE, len(answers))

    clear.keeps_upload_answers = True  # type: ignore[attr-defined]
    ForwardMsgQueue.clear = clear  # type: ignore[method-assign]
