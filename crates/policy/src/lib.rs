//! NetworkPolicy compiler: policies + pods + namespaces -> nftables plan (pure)
