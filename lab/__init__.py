"""The lab: a stack's plan booted on one Linux machine in network namespaces."""
