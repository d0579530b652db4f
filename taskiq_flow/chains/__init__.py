"""The worker side of sequential pipelines: specs, shared run state, and the driver that
advances a run when one of its steps finishes."""
