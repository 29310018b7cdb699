"""The spend sync: the proxy's spend logs, window by window, into spend_logs and usage entries."""
