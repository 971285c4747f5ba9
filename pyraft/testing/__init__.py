"""Jepsen-style fault injection for pyraft: histories, checkers, a fault proxy, a nemesis, a harness.

Real ``python -m pyraft.node`` processes talk over real TCP through proxies that
the harness controls; clients record every operation; checkers decide whether
what the clients saw could have come from a correct system.
"""
