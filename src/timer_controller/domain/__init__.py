"""The domain: task states, outcomes, the retry decision, durations. Pure Python."""
