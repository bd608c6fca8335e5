"""The foundation every other part builds on: the configurations and their defaults, what training
costs, devices, seeds and filters, durable files, and the records a measurement returns."""
