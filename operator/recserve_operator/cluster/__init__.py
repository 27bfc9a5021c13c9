"""The cluster side: the Kubernetes platform, kopf handlers and admission."""
