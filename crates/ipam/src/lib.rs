//! IP address management: range allocators with crash-safe on-disk state
