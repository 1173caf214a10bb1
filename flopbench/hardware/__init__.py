"""The hardware: the dense peak table (`peaks.csv`, read by `peaks`) and what this machine is (`detect`)."""
