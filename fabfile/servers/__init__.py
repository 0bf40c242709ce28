"""The servers under test: each kind (``kinds``: redis-cluster, redis, command) plans its nodes
from the spawn file, starts them on the server hosts (``nodes``: detached, protected, their
pid recorded), waits until they answer, checks them and stops them. ``base`` is the interface
a kind implements."""
