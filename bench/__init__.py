"""Benchmarks with recorded results (README "Measured"); run each as a script, root where it says so."""
