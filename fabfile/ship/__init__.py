"""Getting code onto hosts that have nothing but sshd: ``build`` makes the agent and server pexes
for the interpreters the hosts really have (``platforms`` says which cannot be served),
``server_build`` and ``redis_source`` the server's own files, ``interpreter*`` and ``bundled``
a CPython for hosts without a usable one; ``push`` streams a file into ``cat`` and ``relay``
passes it host to host (its hops run bench.agent.hop)."""
