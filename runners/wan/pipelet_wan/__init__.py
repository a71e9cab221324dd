"""pipelet's Wan 2.2 runner: a long-lived process that keeps diffusers' Wan 2.2 pipelines
in memory and renders jobs for ``pipelet worker --runner wan``.

It speaks the JSON-lines protocol of ``PROTOCOL.md`` on stdin/stdout (stdout carries
protocol messages only; logs go to stderr). Run it as ``python -m pipelet_wan``.
"""

__version__ = "0.1.0"
