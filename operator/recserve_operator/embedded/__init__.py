"""The embedded default: a RecommenderModel served from a local Ray cluster, no Kubernetes."""
