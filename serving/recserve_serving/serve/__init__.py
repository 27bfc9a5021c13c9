"""The Ray Serve application: a router (ingress) in front of one ranker deployment per version."""
