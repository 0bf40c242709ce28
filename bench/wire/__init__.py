"""All the agent shares with the controller: the messages and the vocabularies both sides speak.

- ``job``: the job the controller sends an agent (:class:`~bench.wire.job.AgentJob`), parsed and
  checked in one place
- ``result``: the result an agent sends back and the failure record the controller keeps
- ``catalogue``: the workloads, their params, and the server kinds
- ``hist``: the histogram settings and codec both sides use; ``hdr``: the agents' histograms
  (HdrHistogram's recording and encoding in pure Python; only the controller reads with hdrh)

Python 3.9+, standard library only: it ships inside the agent pex.
"""
