"""Results read back: tables aggregated per cell, power-law fits with their intervals, figures."""
