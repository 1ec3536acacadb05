"""A boot lab: a private network namespace with dnsmasq, ``kiwispray serve`` and QEMU machines.

``namespace`` makes the network, ``machine`` the QEMU machines on it, ``lab`` puts dnsmasq
(from the shipped dnsmasq.conf.example) and the server beside them, ``forward`` makes the
server reachable from this machine's 127.0.0.1, and ``demo`` is ``kiwispray demo``. The
real-boot tests (tests/e2e) run on the same pieces. Everything here needs root.
"""
