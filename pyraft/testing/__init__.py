"""Jepsen-style fault injection for pyraft: histories, checkers, a fault proxy, a nemesis, a harness.

Real ``python -m pyraft.node`` processes talk over real TCP through proxies that
the harness controls; clients record every operation; checkers decide whether
what the clients saw could have come from a correct system.

``python -m pyraft.testing --time 600 --nodes 5 --seed N`` runs one long run (see
:mod:`pyraft.testing.__main__`); ``tests/faults`` holds the short CI schedules and
the self-tests (hand-made histories, and the test-only broken node mode
``PYRAFT_UNSAFE_ACK_BEFORE_COMMIT=1`` that the suite must catch).

Modules: :mod:`.history` (the JSON Lines format), :mod:`.linearizability` and
:mod:`.checkers` (register, set, log, durability), :mod:`.proxy` and :mod:`.nemesis`
(faults), :mod:`.harness` (processes), :mod:`.api` (the HTTP client and how answers
map to ok/fail/info), :mod:`.workload` (the protocol) and :mod:`.workloads` (registers,
set, log), :mod:`.run` (one run and its report folder), :mod:`.plot` (latency PNG).
"""
