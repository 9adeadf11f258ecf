//! Domain types for cluster objects (no Kubernetes client dependency, no I/O)
