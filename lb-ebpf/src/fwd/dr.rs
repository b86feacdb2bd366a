//! Direct routing (LVS-DR): the IP packet is untouched; only the Ethernet
//! addresses change (done by `out`). The real server has the VIP on a
//! loopback and answers the client directly.
