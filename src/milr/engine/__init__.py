"""The measurement of one (depth, width): the network, the batched engine that trains it, the η*
search, λ1 at initialisation, and `estimate`, which runs them end to end."""
