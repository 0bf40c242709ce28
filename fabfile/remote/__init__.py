"""Reaching the hosts: every byte between the controller and a host goes through here.

``ssh`` and ``transport`` open host-key-checked connections (bounded handshakes, sshd's session
limit respected); ``fleet`` holds one per host and runs a step on all of them in parallel
(``pool``); ``shell`` quotes every argument and names every failure; ``streams`` bounds what a
host may send back; ``addresses`` learns where hosts reach each other; ``lock`` and ``reaper``
keep two controllers, or a crashed one, from leaving a host half-used."""
