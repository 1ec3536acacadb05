"""The event feed: events after a cursor from the database, and one poller waking every stream."""

import re
import threading

from ks.fleet import feed

from helpers import MAC1, MAC2, boot


def test_events_after_a_cursor_come_oldest_first(client, db):
    boot(client, MAC1)
    with db.read() as s:
        first = feed.last_id(s)
    boot(client, MAC2)
    with db.read() as s:
        after = feed.events_after(s, first)
        assert [d["kind"] for d in after] == ["register", "boot"] and after[0]["id"] > first
        assert feed.events_after(s, feed.last_id(s)) == []


def test_one_poller_wakes_every_stream_with_every_event_in_order():
    events: list[dict] = []
    lock = threading.Lock()

    def read(after):
        with lock:
            return [e for e in events if e["id"] > after]

    def newest():
        with lock:
            return events[-1]["id"] if events else 0

    poller = feed.Poller(read, newest, interval=0.01)
    seen: dict[int, list[int]] = {0: [], 1: []}
    done = threading.Event()

    def stream(n):
        for chunk in poller.follow_frames(0, stop=done.is_set, wake=0.05):
            seen[n].extend(int(i) for i in re.findall(rb"^id: (\d+)$", chunk, re.MULTILINE))
            if len(seen[n]) == 50:
                return

    threads = [threading.Thread(target=stream, args=(n,)) for n in seen]
    for t in threads:
        t.start()
    for i in range(1, 51):
        with lock:
            events.append({"id": i, "kind": "boot"})
    for t in threads:
        t.join(10)
    done.set()
    assert seen == {0: list(range(1, 51)), 1: list(range(1, 51))}


def test_a_frame_carries_the_id_the_kind_and_the_document():
    assert feed.sse_frame({"id": 7, "kind": "finish"}) == 'id: 7\nevent: finish\ndata: {"id": 7, "kind": "finish"}\n\n'


def test_the_feed_documents_are_the_history_api_documents(client, db):
    from ks.fleet import machines, present

    boot(client, MAC1)
    with db.read() as s:
        assert feed.events_after(s, 0) == [present.event_dict(e) for e in machines.history(s, 1)]
