"""A run that lives on the hosts, seen from the controller, and the store it ends in.

``hostrun`` plans each host's share and starts, polls and stops it (the contract is
bench.wire.hostrun); ``follow`` streams what the hosts write into the local run directory and
rides out lost links; ``live`` is the fleet-wide view while it runs; ``recorded`` is what bench,
attach, status and collect share about a recorded run; ``observe`` keeps host facts and metrics;
``store`` is the run store (runs/<run-id>/); ``reports`` and ``gates`` read it back for
``inv report``/``compare``/``plot`` and CI."""
