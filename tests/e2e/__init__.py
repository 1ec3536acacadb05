"""Real boots: dnsmasq, kiwispray serve and QEMU machines in a private network namespace."""
