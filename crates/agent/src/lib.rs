//! The node agent: watch cluster state, program the node's datapath
