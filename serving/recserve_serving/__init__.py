"""recserve's model, engines and Ray Serve app; importing it keeps the process offline."""

from recserve_serving.offline import stay_offline

stay_offline()
