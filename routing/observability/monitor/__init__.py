"""The topic monitor behind ``statement-router monitor``, ``/ops/topics``, ``/ops/lag``, the
operators' console and the consumer-lag metric.

* ``model``: the snapshot (plain data) and its pure computations;
* ``sampler``: ``Monitor``, which takes snapshots from the broker's offsets (and the
  delivery ledger for open dead letters);
* ``service``: ``MonitorService``, one cached monitor shared by a server process;
* ``collector``: the Prometheus collector of ``statement_router_consumer_lag``;
* ``view``: rich tables for the CLI.
"""
