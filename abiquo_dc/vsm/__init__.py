"""Virtual System Monitor: every VM state change on the monitored hosts, sent to central."""
