"""The run machinery: run directories, logs, checks before a run, preemption, processes, results."""
