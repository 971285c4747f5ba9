"""The sans-I/O Raft core: no sockets, clocks, threads or global randomness in here."""
