"""The master process: listeners (sockets), the arbiter loop (arbiter), its inputs
(signals), the process layer it drives (process), its worker table (workers) and
start-up chores (startup). Entry point: ``preforkd.master.main.run(cfg)``."""
