"""Probes: passive observers of a loader's processes, each returning a ``ProbeResult``.

This package imports neither ``loadtune`` nor ``reports``; the loader writes
:class:`probes.events.BatchEvent` records that the stages probe reads.
"""
