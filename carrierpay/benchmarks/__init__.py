"""The benchmarks, one module each: `payment` (end to end through the daemons and simulators; what
`carrierpay bench` runs) and `sched` (the scheduling engine: best-hour retries, sched.run_due
throughput). They measure the product from outside, so they own the SQL that builds their
populations and measures it. Their recorded figures and run logs are in benchmarks/RESULTS.md and
benchmarks/runs/."""
