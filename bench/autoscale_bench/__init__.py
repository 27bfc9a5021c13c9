"""The parts of ``bench/autoscale_validate.py``: observing Ray Serve, comparing with the simulator, the run."""
