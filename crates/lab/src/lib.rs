//! The lab: fabric, nodes and external host as network namespaces; pod runner
