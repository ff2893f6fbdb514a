"""robot-stack: deploy vision-language-action policies from the GPU box to a real robot."""

__version__ = "0.1.0"
