"""The Dagster-free logic of the lifecycle, one package per stage (``defs/`` wires it into
assets). Lower packages never import higher ones (``make lint`` checks it):
``monitoring``, ``reporting`` > ``governance`` > ``training``, ``serving`` > ``dataset`` >
the modules every stage shares: ``io`` (files, hashes, chunks, memory), ``evaluation``
(metrics) and ``retention`` (which stored versions may go)."""
