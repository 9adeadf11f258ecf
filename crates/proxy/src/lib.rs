//! Service proxy compiler: Services + EndpointSlices -> nftables plan (pure)
