"""Reliability: kill -9 and resume, server faults, bad input, one writer, disk full, secrets.

See harness.py for how a run is set up (the real CLI, the OpenAI engine against
tests/faults/fault_server.py, real TRL training of a tiny model) and bench/kill_trials.py for the
many-trials version of test_kill_resume.py.
"""
