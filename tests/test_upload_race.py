"""ui.upload_race: a file_urls_response queued for the browser survives the queue clear at the start
of a script run (Streamlit drops it, and the upload is lost); nothing else changes."""
from __future__ import annotations

import logging

import pytest
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

from ui import upload_race


def pending() -> ForwardMsgQueue:
    """A queue as a busy server holds it: an upload's URLs, a delta of the current run, a lifecycle message."""
    queue = ForwardMsgQueue()
    answer = ForwardMsg()
    answer.file_urls_response.response_id = "request-1"
    answer.file_urls_response.file_urls.add(file_id="f1", upload_url="/_stcore/upload_file/s/f1")
    delta = ForwardMsg()
    delta.delta.new_element.markdown.body = "stale output"
    delta.metadata.delta_path[:] = [0, 0]
    status = ForwardMsg()
    status.session_status_changed.script_is_running = True
    for msg in (answer, delta, status):
        queue.enqueue(msg)
    return queue


def kinds(messages: list[ForwardMsg]) -> list[str]:
    return [m.WhichOneof("type") for m in messages]


@pytest.fixture
def guarded(monkeypatch):
    monkeypatch.setattr(ForwardMsgQueue, "clear", ForwardMsgQueue.clear)  # undone after the test
    upload_race.keep_upload_answers()
    upload_race.keep_upload_answers()  # idempotent: one wrapper, not two
    assert ForwardMsgQueue.clear.keeps_upload_answers and not hasattr(ForwardMsgQueue.clear.__wrapped__,
                                                                      "keeps_upload_answers")


def test_streamlit_itself_drops_the_answer(monkeypatch):
    """The race this guards against: when this fails, Streamlit keeps the answer itself and the guard can go."""
    if getattr(ForwardMsgQueue.clear, "keeps_upload_answers", False):
        monkeypatch.setattr(ForwardMsgQueue, "clear", ForwardMsgQueue.clear.__wrapped__)
    queue = pending()
    queue.clear(retain_lifecycle_msgs=True)
    assert kinds(queue.flush()) == ["session_status_changed"]


def test_the_guard_keeps_the_answer_and_only_it(guarded, caplog):
    queue = pending()
    with caplog.at_level(logging.WARNING, logger=upload_race.__name__):
        queue.clear(retain_lifecycle_msgs=True)
    sent = queue.flush()
    assert kinds(sent) == ["session_status_changed", "file_urls_response"]
    assert sent[1].file_urls_response.response_id == "request-1"
    assert upload_race.KEPT_MESSAGE in caplog.text
    assert queue.is_empty()


def test_a_full_clear_and_a_flush_still_empty_the_queue(guarded):
    queue = pending()
    queue.clear()
    assert queue.is_empty()
    queue = pending()
    assert kinds(queue.flush()) == ["file_urls_response", "delta", "session_status_changed"]
    assert queue.is_empty()
