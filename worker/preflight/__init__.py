"""Is every dependency there and set up right? `litellm-credits check` prints one finding per
dependency (worker.preflight.report); the worker and `run` stop at start on the fatal ones
(worker.preflight.startup), with one line naming the setting to fix or the command to run."""
