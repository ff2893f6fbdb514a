"""Operator tools: ``robot-stack doctor`` (is this machine ready?) and ``robot-stack ping`` (is that server?)."""
