"""Workarounds for two bugs of pyghmi 1.6.19; delete each once pyghmi fixes it.

Both bite a process that talks to one BMC more than once, which a server does all day.
Importing this module applies the first; the IPMI driver calls the second.
"""

from pyghmi.ipmi.private import session


def _io_wait_unless_answered(timeout, myaddr=None, evq=None, _io_wait=session._io_wait):
    """pyghmi's ``_io_wait``, except when an answer from ``myaddr`` is already queued."""
    # pyghmi sends a request and only then registers to be woken by the answer; an
    # answer that arrives in between sits in the queue until the retransmit timer
    # (0.5-1 s) ends the wait. A login takes five requests: on a busy machine one
    # status took seconds and a listing marked live BMCs as dead. Every caller of
    # _io_wait reads the queue when it returns, so returning at once is safe.
    if myaddr is not None and any(
        pending.sockaddr == myaddr and pending.pktqueue for pending in list(session.sessionqueue)
    ):
        return
    _io_wait(timeout, myaddr, evq)


session._io_wait = _io_wait_unless_answered


def forget_dead_sessions() -> None:
    """Drop logged-out and failed sessions from pyghmi's table of sessions being set up."""
    # pyghmi never removes them (it looks them up under another key) and hands such a
    # dead session to the next login with the same BMC and credentials, which then
    # hangs until it times out.
    pending = session.Session.initting_sessions
    for key, candidate in list(pending.items()):
        if candidate.broken:
            pending.pop(key, None)
