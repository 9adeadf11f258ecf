//! The lab control plane: a Kubernetes API subset server with storage and controllers
