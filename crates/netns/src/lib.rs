//! Network namespaces and synchronous netlink helpers (links, addresses, routes)
