"""Self-Lengthen: an instruct LLM learns to write long texts from its own outputs.

Quan et al., 2024, arXiv 2410.23933. See README.md for the two commands a newcomer needs.
"""

__version__ = "0.1.0"
