"""Depth × width sweeps: grid files, the results store and trials log, a task's rows, the
executors that run tasks, and the resumable run (`run`)."""
