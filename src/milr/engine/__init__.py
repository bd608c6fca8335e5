"""The measurement of one (depth, width): the network, the batched engine that trains it, the η*
search, λ1 at initialisation, and `estimate`, which runs them end to end; and the scan of a
rate grid for the whole budget (`scanning.scan`) with its analysis (`scan`, no torch)."""
